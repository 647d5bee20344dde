// libFuzzer target: every message decoder. The first byte picks the message type (modulo the
// count); the rest is its CBOR payload, read through the same path a received frame takes.
// A message that decodes must re-encode to bytes that decode to an equal message.

let checks: [([UInt8]) -> Void] = [
    { check(Hello.self, $0) }, { check(ErrorMessage.self, $0) }, { check(Ping.self, $0) }, { check(Pong.self, $0) },
    { check(Shutdown.self, $0) }, { check(ExecRequest.self, $0) }, { check(Started.self, $0) },
    { check(StdinError.self, $0) }, { check(Exited.self, $0) }, { check(Done.self, $0) }, { check(Failed.self, $0) },
    { check(Resize.self, $0) }, { check(SignalRequest.self, $0) }, { check(KillRequest.self, $0) }, { check(Ack.self, $0) },
    { check(ListSessions.self, $0) }, { check(SessionList.self, $0) }, { check(Attach.self, $0) },
    { check(Attached.self, $0) }, { check(Detach.self, $0) }, { check(Detached.self, $0) },
    { check(LogsRequest.self, $0) }, { check(SignalSession.self, $0) },
    { check(ExposePort.self, $0) }, { check(PortExposed.self, $0) }, { check(UnexposePort.self, $0) },
    { check(ListPorts.self, $0) }, { check(PortList.self, $0) }, { check(TunnelOpen.self, $0) },
    { check(TunnelOpened.self, $0) },
    { check(ProcessStart.self, $0) }, { check(ProcessReady.self, $0) }, { check(ProcessFailed.self, $0) },
    { check(ProcessList.self, $0) }, { check(ProcessTable.self, $0) }, { check(ProcessLogs.self, $0) },
    { check(ProcessLogPosition.self, $0) }, { check(ProcessSignal.self, $0) }, { check(ProcessWait.self, $0) },
    { check(ProcessEnded.self, $0) }, { check(ProcessRemove.self, $0) },
]

func check<M: Message>(_ type: M.Type, _ payload: [UInt8]) {
    guard let message = try? M(cbor: payload) else { return }
    guard let again = try? M(cbor: message.cborBytes), again == message else {
        fatalError("\(M.self) does not survive re-encoding")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let payload = Array(input[1...])
    checks[Int(input[0]) % checks.count](payload)
    return 0
}
