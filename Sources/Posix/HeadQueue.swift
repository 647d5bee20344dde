/// A first-in first-out queue over one array: taking from the front moves a head index
/// instead of shifting the elements, and the array is compacted once the taken part is at
/// least half of it (or emptied when everything was taken), so both ends cost O(1) amortized.
///
/// Positions (`subscript`, `indices`) count from the oldest element still queued.
/// Inlinable, so that it is specialized for its element type in the modules that use it.
public struct HeadQueue<Element> {
    @usableFromInline var storage: [Element] = []
    @usableFromInline var head = 0
    /// Taken elements below this many are never compacted away: moving a handful costs more
    /// than it frees. An emptied array keeps its capacity below it, to be filled again.
    @inlinable static var compactionThreshold: Int { 64 }

    @inlinable public init() {}

    @inlinable public var isEmpty: Bool { head == storage.count }
    @inlinable public var count: Int { storage.count - head }
    @inlinable public var indices: Range<Int> { 0..<count }
    @inlinable public var first: Element? { isEmpty ? nil : storage[head] }

    @inlinable public subscript(position: Int) -> Element {
        get { storage[head + position] }
        set { storage[head + position] = newValue }
    }

    @inlinable public mutating func append(_ element: Element) { storage.append(element) }

    /// Takes the oldest element; the queue must not be empty.
    @inlinable @discardableResult
    public mutating func removeFirst() -> Element {
        let element = storage[head]
        head += 1
        if head == storage.count {
            storage.removeAll(keepingCapacity: storage.count < Self.compactionThreshold)
            head = 0
        } else if head >= Self.compactionThreshold && head * 2 >= storage.count {
            storage.removeFirst(head)
            head = 0
        }
        return element
    }

    /// Drops the queued elements that match, keeping the others in order.
    @inlinable public mutating func removeAll(where shouldRemove: (Element) throws -> Bool) rethrows {
        storage = try storage[head...].filter { try !shouldRemove($0) }
        head = 0
    }
}
