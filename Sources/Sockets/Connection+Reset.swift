import Glibc

extension Connection {
    /// Closes with a TCP RST instead of a FIN (SO_LINGER on with a zero timeout): what a crashed or hostile peer
    /// looks like. Queued bytes are dropped. On the connection's queue.
    public func reset() {
        guard !isClosed else { return }
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close(afterFlush: false)
    }
}
