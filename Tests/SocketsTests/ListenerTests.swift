import Dispatch
import Glibc
import NetAddress
import Testing

@testable import Sockets

extension SocketIO {
    @Suite struct ListenerTests {
        @Test(arguments: ["127.0.0.1:0", "[::1]:0"])
        func echoesOverLoopback(listen: String) throws {
            let server = try EchoServer(try address(listen))
            defer { server.stop() }
            let bound = server.listener.localAddress
            #expect(bound.port != 0)
            #expect(bound.ip == (try address(listen)).ip)

            let clientQueue = DispatchQueue(label: "client")
            let client = try #require(try connectAndWait(to: bound, queue: clientQueue)?.get())
            #expect(client.peer == bound)
            #expect(client.local.family == bound.family)

            let message = Array("EHLO dual.stack.test\r\n".utf8)
            let collector = Collector(expected: message.count)
            collector.start(client)
            clientQueue.sync { client.write(message) }
            #expect(wait(collector.done, seconds: 5))
            #expect(collector.received == message)
            #expect(server.acceptedPeers == [client.local])
            clientQueue.sync { client.close() }
        }

        /// `[::]:P` and `0.0.0.0:P` both bind; each client is seen in its own family.
        @Test func wildcardsOfBothFamiliesShareAPort() throws {
            var pair: (EchoServer, EchoServer)?
            let v4Wildcard = try address("0.0.0.0:0")
            // Another process may grab the IPv4 port between the two binds; try a few fresh ports.
            for _ in 0..<5 where pair == nil {
                let v6 = try EchoServer(try address("[::]:0"))
                let port = v6.listener.localAddress.port
                do throws(SocketError) {
                    let v4 = try EchoServer(SocketAddress(ip: v4Wildcard.ip, port: port))
                    pair = (v6, v4)
                } catch {
                    #expect(error == .system(call: "bind", errno: EADDRINUSE))
                    v6.stop()
                }
            }
            let (v6, v4) = try #require(pair)
            defer {
                v6.stop()
                v4.stop()
            }
            let port = v6.listener.localAddress.port
            #expect(v4.listener.localAddress.port == port)

            let clientQueue = DispatchQueue(label: "client")
            let client4 = try #require(
                try connectAndWait(to: try address("127.0.0.1:\(port)"), queue: clientQueue)?.get())
            let client6 = try #require(try connectAndWait(to: try address("[::1]:\(port)"), queue: clientQueue)?.get())
            #expect(poll(seconds: 5) { v4.accepted == 1 && v6.accepted == 1 })

            let peer4 = try #require(v4.acceptedPeers.first)
            #expect(peer4.family == .ipv4)
            #expect(peer4.ip == IPAddress("127.0.0.1"))
            #expect(peer4 == client4.local)
            let peer6 = try #require(v6.acceptedPeers.first)
            #expect(peer6.family == .ipv6)
            #expect(peer6.ip == IPAddress("::1"))
            #expect(peer6 == client6.local)
            clientQueue.sync {
                client4.close()
                client6.close()
            }
        }

        /// `[::]:P` alone does not take IPv4 (IPV6_V6ONLY set whatever the sysctl says).
        @Test func ipv6WildcardRefusesIPv4() throws {
            let server = try EchoServer(try address("[::]:0"))
            defer { server.stop() }
            let port = server.listener.localAddress.port
            let result = try #require(
                connectAndWait(to: try address("127.0.0.1:\(port)"), queue: DispatchQueue(label: "c")))
            #expect(throws: SocketError.system(call: "connect", errno: ECONNREFUSED)) { try result.get() }
            #expect(server.accepted == 0)
        }

        @Test(arguments: ["127.0.0.1:0", "[::1]:0"])
        func bindingAPortInUseThrows(listen: String) throws {
            let first = try Listener.bind(try address(listen))
            defer { first.close() }
            #expect(throws: SocketError.system(call: "bind", errno: EADDRINUSE)) {
                _ = try Listener.bind(first.localAddress)
            }
        }

        @Test func closeStopsAcceptingAndIsIdempotent() throws {
            let server = try EchoServer(try address("127.0.0.1:0"))
            let bound = server.listener.localAddress
            server.stop()
            server.listener.close()
            #expect(server.listener.isClosed)
            let refused = poll(seconds: 5) {
                guard let result = connectAndWait(to: bound, queue: DispatchQueue(label: "c")) else { return false }
                if case .success(let connection) = result { connection.queue.sync { connection.close() } }
                return result.failureErrno == ECONNREFUSED
            }
            #expect(refused)
        }

        @Test func unstartedListenerClosesItsSocket() throws {
            let listener = try Listener.bind(try address("127.0.0.1:0"))
            let socket = try #require(SocketIdentity(fd: listener.fd))
            #expect(socket.isOpen)
            listener.close()
            listener.close()
            #expect(!socket.isOpen)
        }

        /// accept() hitting EMFILE must back off, not spin, and accepting resumes once fds are free.
        @Test func acceptBacksOffOnEMFILEAndRecovers() throws {
            let listener = try Listener.bind(try address("127.0.0.1:0"))
            defer { listener.close() }
            let queue = DispatchQueue(label: "emfile-listener")
            // Dispatch creates its timer fd on first use; make sure that is not what hits the limit.
            let warm = DispatchSemaphore(value: 0)
            queue.asyncAfter(deadline: .now() + .milliseconds(1)) { warm.signal() }
            #expect(wait(warm, seconds: 5))

            // The clients are opened before the limit is lowered; their connections wait in the backlog.
            let clientCount = 30
            var clients: [Int32] = []
            defer { for fd in clients { _ = Glibc.close(fd) } }
            for _ in 0..<clientCount {
                let fd = blockingConnect(to: listener.localAddress)
                try #require(fd >= 0)
                clients.append(fd)
            }

            var saved = rlimit()
            try #require(getrlimit(noFileLimit, &saved) == 0)
            var lowered = saved
            lowered.rlim_cur = rlim_t(limitLeavingFreeDescriptors(2))  // room for two accepted sockets
            try #require(setrlimit(noFileLimit, &lowered) == 0)
            var restored = false
            defer { if !restored { _ = setrlimit(noFileLimit, &saved) } }

            let accepted = Shared<[AcceptedSocket]>([])
            let errors = Shared<[SocketError]>([])
            let firstError = DispatchSemaphore(value: 0)
            listener.start(
                queue: queue, onAccept: { socket in accepted.update { $0.append(socket) } },
                onError: { error in
                    if errors.update({
                        $0.append(error); return $0.count
                    }) == 1 {
                        firstError.signal()
                    }
                })
            #expect(wait(firstError, seconds: 5))
            #expect(errors.get().first == .system(call: "accept", errno: EMFILE))

            // Measure one second at the limit: ~10 retries at 100 ms; a spinning source would make thousands.
            var before = rusage()
            getrusage(rusageSelf, &before)
            let wakeupsBefore = queue.sync { listener.wakeups }
            let errorsBefore = errors.get().count
            usleep(1_000_000)  // a measurement window with a fixed deadline, not a wait for a condition
            var after = rusage()
            getrusage(rusageSelf, &after)
            let wakeups = queue.sync { listener.wakeups } - wakeupsBefore
            let errorCount = errors.get().count - errorsBefore
            let cpu = cpuSeconds(after) - cpuSeconds(before)
            #expect(wakeups <= 30, "read source fired \(wakeups) times in 1 s")
            #expect(errorCount >= 3 && errorCount <= 30, "\(errorCount) EMFILE reports in 1 s")
            #expect(cpu < 0.5, "\(cpu) s CPU in 1 s at EMFILE")

            // Free the accepted fds: the next retry takes more connections off the backlog.
            let held = accepted.update { sockets in
                defer { sockets.removeAll() }
                return sockets
            }
            #expect(!held.isEmpty && held.count < clientCount)
            for socket in held { socket.close() }
            #expect(poll(seconds: 5) { !accepted.get().isEmpty })

            // With the old limit back, the rest of the backlog drains.
            _ = setrlimit(noFileLimit, &saved)
            restored = true
            let drained = poll(seconds: 5) { held.count + accepted.get().count == clientCount }
            #expect(drained)
            for socket in accepted.get() { socket.close() }
        }
    }
}

private func cpuSeconds(_ usage: rusage) -> Double {
    Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
        + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1_000_000
}

extension Result where Failure == SocketError {
    /// The errno of a failed result, for compact assertions.
    var failureErrno: Int32? {
        if case .failure(let error) = self { return error.errnoCode }
        return nil
    }
}

private let noFileLimit = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
private let rusageSelf = __rusage_who_t(RUSAGE_SELF.rawValue)
