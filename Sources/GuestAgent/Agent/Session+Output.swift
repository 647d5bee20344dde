import TetherPosix
import TetherProtocol

/// One buffer of a data frame's size, shared by every session of the agent for reads that
/// cannot go straight into the link's outbound buffer (snapshots, sessions nobody watches).
/// Lives on the agent's loop thread; holds no descriptor.
final class ScratchBuffer {
    private var bytes = [UInt8](repeating: 0, count: Frame.maxDataPayloadBytes)

    func with<R>(_ count: Int, _ body: (UnsafeMutableRawBufferPointer) -> R) -> R {
        bytes.withUnsafeMutableBytes { body(UnsafeMutableRawBufferPointer(rebasing: $0[0..<min(count, $0.count)])) }
    }
}

/// Output: from the program's pipes (or pty) into the client's window, or into the backlog.
extension Session {
    /// Reads what a stream holds right now (FIONREAD), no more: a descendant that keeps
    /// writing cannot hold the exit back.
    func snapshot(_ index: Int) {
        var remaining = output.readableBytes(index)
        while remaining > 0 && output.streams[index].isOpen {
            guard case .bytes(let n) = readIntoBacklog(index, limit: min(remaining, Frame.maxDataPayloadBytes)) else { break }
            remaining -= n
        }
    }

    /// Reads once from a stream into the backlog (snapshots, and sessions nobody watches).
    @discardableResult
    private func readIntoBacklog(_ index: Int, limit: Int) -> ReadResult {
        let kind = output.streams[index].kind
        let bounded = client == nil
        let outcome: ReadResult = scratch.with(limit) { buffer in
            let outcome = output.read(index, into: buffer)
            if case .bytes(let n) = outcome {
                let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
                tap?.sessionOutput(self, kind: kind, bytes)
                // Nobody watches and a tap keeps the output: a second copy would only be dropped.
                if client != nil || tap == nil { backlog.append(kind: kind, bytes, bounded: bounded) }
            }
            return outcome
        }
        if case .endOfFile = outcome { closeOutput(index) }
        return outcome
    }

    /// A stream is readable: straight into the link while the window and the link allow.
    func outputReadable(_ index: Int) {
        guard output.streams[index].isOpen else { return }
        if let client {
            let link = client.link
            guard backlog.isEmpty, client.window > 0, !link.congested else {
                refreshInterest()
                return
            }
            let kind = output.streams[index].kind
            for _ in 0..<4 {
                let limit = min(self.client?.window ?? 0, Frame.maxDataPayloadBytes)
                var outcome = ReadResult.wouldBlock
                _ = link.appendData(id: client.id, kind: kind, maxPayload: limit) { buffer in
                    outcome = output.read(index, into: buffer)
                    if case .bytes(let n) = outcome {
                        tap?.sessionOutput(self, kind: kind, UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                        return n
                    }
                    return -1
                }
                guard case .bytes(let n) = outcome else {
                    if case .endOfFile = outcome { closeOutput(index) }
                    break
                }
                self.client?.window -= n
                if n < limit || self.client?.window == 0 || link.congested { break }
            }
            link.queued()
        } else {
            readIntoBacklog(index, limit: Frame.maxDataPayloadBytes)
        }
        if !output.streams[index].isOpen { pump() } else { refreshInterest() }
    }

    /// Sends what the backlog and the window allow, then `done` once everything is out.
    func pump() {
        if let link = client?.link, let id = client?.id {
            // Again when the backlog stopped on a congested link that `queued()` then flushed
            // below its low-water mark: that drain's `onDrained` ran before this session could
            // ask to be woken (in `refreshInterest`), so nothing else would pump it.
            repeat {
                sendBacklog(on: link, id: id)
                link.queued()
            } while !backlog.isEmpty && (client?.window ?? 0) > 0 && !link.congested
        }
        checkComplete()
        refreshInterest()
    }

    /// Appends the backlog's head to the link until it is empty, the window is spent or the
    /// link is congested (`exited` goes whatever the window).
    private func sendBacklog(on link: FramedConnection, id: UInt32) {
        while let head = backlog.oldest {
            switch head {
            case .data(let kind):
                let window = client?.window ?? 0
                guard window > 0, !link.congested else { return }
                let n = backlog.withHeadBytes { raw in
                    let n = min(raw.count, window, Frame.maxDataPayloadBytes)
                    link.appendData(id: id, kind: kind, UnsafeRawBufferPointer(rebasing: raw[0..<n]))
                    return n
                }
                client?.window -= n
                backlog.consumeFirst(bytes: n)
            case .exited(let exited):
                link.send(exited, id: id)
                backlog.consumeFirst(bytes: 0)
            }
        }
    }

    /// The link is congested: the owner pumps this session again once it drains.
    func waitForRoom() {
        guard let client, !client.waitsForRoom else { return }
        self.client?.waitsForRoom = true
        owner?.sessionWaitsForRoom(self)
    }
}
