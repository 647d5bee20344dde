import Testing
import TetherPosix

@Suite struct HeadQueueTests {
    @Test func elementsLeaveInOrderAcrossCompactions() {
        var queue = HeadQueue<Int>()
        var expected: [Int] = []
        var next = 0
        // Enough turns of "add three, take two" to compact many times.
        for _ in 0..<500 {
            for _ in 0..<3 {
                queue.append(next)
                expected.append(next)
                next += 1
            }
            for _ in 0..<2 {
                #expect(queue.removeFirst() == expected.removeFirst())
            }
            #expect(queue.count == expected.count)
            #expect(queue.first == expected.first)
        }
        #expect(queue.indices.map { queue[$0] } == expected)
        while !queue.isEmpty { #expect(queue.removeFirst() == expected.removeFirst()) }
        #expect(expected.isEmpty)
        #expect(queue.first == nil)
    }

    @Test func positionsCountFromTheOldestAndRemovalKeepsTheOrder() {
        var queue = HeadQueue<Int>()
        for i in 0..<10 { queue.append(i) }
        queue.removeFirst()
        queue.removeFirst()
        queue[0] += 100
        #expect(queue[0] == 102)
        queue.removeAll { $0 % 2 == 1 }
        #expect(queue.indices.map { queue[$0] } == [102, 4, 6, 8])
    }
}
