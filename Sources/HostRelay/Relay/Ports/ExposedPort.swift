import TetherPosix
import TetherProtocol

/// One exposed port: the host address it listens on, the guest port it reaches, and the
/// listening socket (nil when a restarted relay could not bind it again).
///
/// Owned by `PortForwards`; lives on the relay's loop thread; ends with `close()`.
final class ExposedPort {
    var info: PortInfo
    private var listener: OwnedFD?
    /// The listening socket's descriptor, while there is one.
    var listenerFD: CInt? { listener?.raw }
    /// Connections accepted since the relay started, and how many the agent refused.
    var connections: UInt64 = 0
    var refusals: UInt64 = 0
    var lastRefusal: String?

    init(info: PortInfo, listener: consuming OwnedFD?) {
        self.info = info
        self.listener = listener
    }

    var entry: PortsFile.Entry {
        PortsFile.Entry(guestPort: info.guestPort, hostAddr: info.hostAddress, hostPort: info.hostPort, name: info.name)
    }

    /// What `listPorts` reports: the saved facts and what happened since.
    var report: PortInfo {
        var report = info
        report.listening = listenerFD != nil && info.listening
        report.connections = connections
        report.refusals = refusals
        report.lastRefusal = lastRefusal
        return report
    }

    func close(on loop: EventLoop) {
        if let fd = listener?.raw { loop.unwatch(fd) }
        listener = nil
    }
}
