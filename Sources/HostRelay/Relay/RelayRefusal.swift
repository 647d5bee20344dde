import TetherProtocol

/// Why the relay will not do what a frame asked: what the request handlers throw, and what
/// `ClientLinks.refuse` (the one place) turns into an `error` frame.
struct RelayRefusal: Error {
    var code: ErrorCode
    var text: String
    var errno: Int32?
    /// Answered on the control channel (id 0) although a session's frame caused it: an END
    /// on that id would end a session that is still in use (or never existed).
    var onControlChannel = false

    init(_ code: ErrorCode, _ text: String, errno: Int32? = nil) {
        self.code = code
        self.text = text
        self.errno = errno
    }

    /// The same refusal, answered on id 0.
    var onControl: RelayRefusal {
        var refusal = self
        refusal.onControlChannel = true
        return refusal
    }

    var message: ErrorMessage { ErrorMessage(code: code, message: text, errno: errno) }
}
