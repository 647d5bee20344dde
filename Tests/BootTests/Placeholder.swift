import Testing

@Test func placeholderBootTests() {}
