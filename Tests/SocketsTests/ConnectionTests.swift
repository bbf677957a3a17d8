import Dispatch
import Glibc
import NetAddress
import Testing

@testable import Sockets

extension SocketIO {
    @Suite struct ConnectionTests {
        /// 8 MiB through a reader that pauses: partial writes and EAGAIN, then close(afterFlush:) drains and
        /// the reader sees every byte in order, then end of stream.
        @Test func largeWriteToSlowReaderArrivesComplete() throws {
            let size = 8 * 1024 * 1024
            let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 % 251) }
            let listener = try Listener.bind(try address("127.0.0.1:0"))
            defer { listener.close() }
            let serverQueue = DispatchQueue(label: "server")
            let written = DispatchSemaphore(value: 0)
            let pendingAfterWrite = Shared(0)
            let serverConnection = Shared<Connection?>(nil)
            listener.start(
                queue: serverQueue,
                onAccept: { socket in
                    let connection = Connection(socket: socket, queue: serverQueue)
                    serverConnection.update { $0 = connection }
                    connection.write(payload) { written.signal() }
                    pendingAfterWrite.update { $0 = connection.pendingWriteBytes }
                    connection.close(afterFlush: true)
                }, onError: { _ in })

            let clientQueue = DispatchQueue(label: "client")
            let client = try #require(try connectAndWait(to: listener.localAddress, queue: clientQueue)?.get())
            let received = Shared(0)
            let mismatch = Shared(false)
            let ended = DispatchSemaphore(value: 0)
            let endError = Shared<SocketError?>(nil)
            var chunks = 0
            clientQueue.sync {
                client.startReading(
                    { chunk in
                        let start = received.get()
                        for (index, byte) in chunk.enumerated()
                        where byte != UInt8(truncatingIfNeeded: (start + index) % 251) {
                            mismatch.update { $0 = true }
                            break
                        }
                        received.update { $0 += chunk.count }
                        chunks += 1
                        // Slow reader: the first chunks are taken with a pause between them.
                        if chunks < 40 {
                            client.pauseReading()
                            clientQueue.asyncAfter(deadline: .now() + .milliseconds(2)) { client.resumeReading() }
                        }
                    },
                    onClose: { error in
                        endError.update { $0 = error }
                        ended.signal()
                    })
            }
            #expect(wait(ended, seconds: 60))
            #expect(wait(written, seconds: 5))
            #expect(received.get() == size)
            #expect(!mismatch.get())
            #expect(endError.get() == nil)
            #expect(pendingAfterWrite.get() > 0, "the first send should have been partial")
            let server = try #require(serverConnection.get())
            #expect(poll(seconds: 5) { serverQueue.sync { server.isClosed && server.pendingWriteBytes == 0 } })
            clientQueue.sync { client.close() }
        }

        @Test(arguments: ["127.0.0.1:0", "[::1]:0"])
        func connectToClosedPortIsRefusedQuickly(listen: String) throws {
            let listener = try Listener.bind(try address(listen))
            let closedPort = listener.localAddress
            listener.close()
            let start = DispatchTime.now()
            let result = try #require(
                connectAndWait(to: closedPort, timeout: .seconds(10), queue: DispatchQueue(label: "c")))
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
            #expect(throws: SocketError.system(call: "connect", errno: ECONNREFUSED)) { try result.get() }
            #expect(elapsed < 1.0)
        }

        /// A listener with a full backlog drops SYNs silently; connect must time out.
        @Test func connectTimesOutAgainstAFullBacklog() throws {
            let listener = try Listener.bind(try address("127.0.0.1:0"), backlog: 0)  // never started
            defer { listener.close() }
            let queue = DispatchQueue(label: "filler")
            var fillers: [Connection] = []
            defer { queue.sync { for connection in fillers { connection.close(afterFlush: false) } } }
            var backlogFull = false
            for _ in 0..<8 where !backlogFull {
                let result = try #require(
                    connectAndWait(to: listener.localAddress, timeout: .milliseconds(300), queue: queue))
                switch result {
                case .success(let connection): fillers.append(connection)
                case .failure(let error):
                    #expect(error == .timedOut)
                    backlogFull = true
                }
            }
            try #require(backlogFull, "the backlog never filled")

            let start = DispatchTime.now()
            let result = try #require(
                connectAndWait(to: listener.localAddress, timeout: .milliseconds(400), queue: queue))
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
            #expect(throws: SocketError.timedOut) { try result.get() }
            #expect(elapsed >= 0.35 && elapsed < 1.5, "timed out after \(elapsed) s")
        }

        /// Connect/close cycles leave no fd behind on either side.
        @Test func noDescriptorLeakAfterManyCycles() throws {
            let server = try EchoServer(try address("127.0.0.1:0"))
            defer { server.stop() }
            let baseline = openSocketCount()
            let cycles = 2000
            let batch = 25
            let queue = DispatchQueue(label: "cycler")
            let failures = Shared(0)
            for _ in 0..<(cycles / batch) {
                let group = DispatchGroup()
                for _ in 0..<batch {
                    group.enter()
                    Connection.connect(to: server.listener.localAddress, from: nil, timeout: .seconds(5), queue: queue)
                    {
                        switch $0 {
                        case .success(let connection): connection.close()
                        case .failure: failures.update { $0 += 1 }
                        }
                        group.leave()
                    }
                }
                try #require(group.wait(timeout: .now() + 10) == .success)
            }
            #expect(failures.get() == 0)
            #expect(poll(seconds: 10) { server.accepted == cycles && server.liveConnections == 0 })
            // Slack for sockets other suites open meanwhile (they run in the same process); a leak would be ~2,000.
            let settled = poll(seconds: 10) { openSocketCount() <= baseline + 64 }
            #expect(settled, "sockets: \(openSocketCount()), baseline \(baseline)")
        }

        @Test func sourceAddressIsBoundFirst() throws {
            let server = try EchoServer(try address("127.0.0.1:0"))
            defer { server.stop() }
            let queue = DispatchQueue(label: "client")
            let source = try address("127.0.0.1:0")
            let client = try #require(
                try connectAndWait(to: server.listener.localAddress, from: source, queue: queue)?.get())
            #expect(client.local.ip == source.ip)
            #expect(client.local.port != 0)
            #expect(poll(seconds: 5) { server.acceptedPeers == [client.local] })
            queue.sync { client.close() }

            let mismatched = try #require(
                connectAndWait(to: server.listener.localAddress, from: try address("[::1]:0"), queue: queue))
            #expect(
                throws: SocketError.familyMismatch(source: try address("[::1]:0"), remote: server.listener.localAddress)
            ) {
                try mismatched.get()
            }
        }

        @Test func earlyTalkerIsSeenBeforeReading() throws {
            let listener = try Listener.bind(try address("[::1]:0"))
            defer { listener.close() }
            let serverQueue = DispatchQueue(label: "server")
            let serverConnection = Shared<Connection?>(nil)
            listener.start(
                queue: serverQueue,
                onAccept: { socket in
                    serverConnection.update { $0 = Connection(socket: socket, queue: serverQueue) }
                }, onError: { _ in })
            let clientQueue = DispatchQueue(label: "client")
            let client = try #require(try connectAndWait(to: listener.localAddress, queue: clientQueue)?.get())
            #expect(poll(seconds: 5) { serverConnection.get() != nil })
            let server = try #require(serverConnection.get())
            #expect(serverQueue.sync { server.hasPendingInput() } == false)
            clientQueue.sync { client.write(Array("EHLO too.early\r\n".utf8)) }
            #expect(poll(seconds: 5) { serverQueue.sync { server.hasPendingInput() } })
            serverQueue.sync { server.close() }
            clientQueue.sync { client.close() }
        }

        /// Writing to a peer that is gone fails with an error and closes the connection — no SIGPIPE.
        @Test func writeToGonePeerClosesWithoutSIGPIPE() throws {
            let listener = try Listener.bind(try address("127.0.0.1:0"))
            defer { listener.close() }
            listener.start(queue: DispatchQueue(label: "server"), onAccept: { $0.close() }, onError: { _ in })
            let clientQueue = DispatchQueue(label: "client")
            let client = try #require(try connectAndWait(to: listener.localAddress, queue: clientQueue)?.get())
            let endOfStream = DispatchSemaphore(value: 0)
            clientQueue.sync { client.startReading({ _ in }, onClose: { _ in endOfStream.signal() }) }
            #expect(wait(endOfStream, seconds: 5))
            #expect(clientQueue.sync { !client.isClosed }, "after end of stream the connection can still write")
            let closed = poll(seconds: 5) {
                clientQueue.sync {
                    if !client.isClosed { client.write([UInt8](repeating: 0x41, count: 1024)) }
                    return client.isClosed
                }
            }
            #expect(closed)
            #expect(clientQueue.sync { client.pendingWriteBytes } == 0)
        }

        /// A suspended source never runs its cancel handler: closing with reading paused and the write source
        /// suspended (after an EAGAIN drain) must still close the fd.
        @Test func closeWithSuspendedSourcesReleasesTheDescriptor() throws {
            let listener = try Listener.bind(try address("127.0.0.1:0"))
            defer { listener.close() }
            let serverQueue = DispatchQueue(label: "server")
            let serverConnection = Shared<Connection?>(nil)
            let drained = DispatchSemaphore(value: 0)
            let payload = [UInt8](repeating: 0x2e, count: 4 * 1024 * 1024)
            listener.start(
                queue: serverQueue,
                onAccept: { socket in
                    let connection = Connection(socket: socket, queue: serverQueue)
                    serverConnection.update { $0 = connection }
                    connection.startReading({ _ in }, onClose: { _ in })
                    connection.pauseReading()
                    connection.write(payload) { drained.signal() }
                }, onError: { _ in })
            let clientQueue = DispatchQueue(label: "client")
            let client = try #require(try connectAndWait(to: listener.localAddress, queue: clientQueue)?.get())
            #expect(poll(seconds: 5) { serverConnection.get() != nil })
            let server = try #require(serverConnection.get())
            #expect(serverQueue.sync { server.pendingWriteBytes } > 0)
            let collector = Collector(expected: payload.count)
            collector.start(client)
            #expect(wait(collector.done, seconds: 30))
            #expect(wait(drained, seconds: 5))
            let serverSocket = try #require(SocketIdentity(fd: server.fd))
            let clientSocket = try #require(SocketIdentity(fd: client.fd))
            serverQueue.sync { server.close() }
            #expect(poll(seconds: 5) { !serverSocket.isOpen })
            #expect(clientSocket.isOpen)
            clientQueue.sync { client.close() }
            #expect(poll(seconds: 5) { !clientSocket.isOpen })
        }

        /// Pausing costs nothing until input arrives; input while paused suspends the read source (no busy loop
        /// on a level-triggered source) and is delivered, complete, after `resumeReading()`.
        @Test func inputWhilePausedWaitsForResume() throws {
            let listener = try Listener.bind(try address("127.0.0.1:0"))
            defer { listener.close() }
            let serverQueue = DispatchQueue(label: "server")
            let serverConnection = Shared<Connection?>(nil)
            let received = Shared<[UInt8]>([])
            listener.start(
                queue: serverQueue,
                onAccept: { socket in
                    let connection = Connection(socket: socket, queue: serverQueue)
                    connection.startReading({ chunk in received.update { $0 += chunk } }, onClose: { _ in })
                    connection.pauseReading()
                    serverConnection.update { $0 = connection }
                }, onError: { _ in })
            let clientQueue = DispatchQueue(label: "client")
            let client = try #require(try connectAndWait(to: listener.localAddress, queue: clientQueue)?.get())
            #expect(poll(seconds: 5) { serverConnection.get() != nil })
            let server = try #require(serverConnection.get())
            #expect(serverQueue.sync { !server.readSourceSuspended }, "paused without input: source untouched")
            clientQueue.sync { client.write(Array("MAIL FROM:<a@example.test>\r\n".utf8)) }
            #expect(poll(seconds: 5) { serverQueue.sync { server.readSourceSuspended } })
            #expect(received.get().isEmpty, "nothing may be delivered while paused")
            serverQueue.sync { server.resumeReading() }
            #expect(poll(seconds: 5) { received.get() == Array("MAIL FROM:<a@example.test>\r\n".utf8) })
            let serverSocket = try #require(SocketIdentity(fd: server.fd))
            serverQueue.sync {
                server.pauseReading()
                server.close()
            }
            #expect(poll(seconds: 5) { !serverSocket.isOpen })
            clientQueue.sync { client.close() }
        }

        /// A peer that sends and never reads: every byte read is answered with 16 bytes (like pipelined commands
        /// with long replies). Once the unsent output passes the high-water mark the server stops reading, so its
        /// queue stays bounded while the peer's sends block; when the peer reads, the server reads on to the end.
        @Test func unreadOutputStopsReading() throws {
            let listener = try Listener.bind(try address("127.0.0.1:0"))
            defer { listener.close() }
            let serverQueue = DispatchQueue(label: "server")
            let serverConnection = Shared<Connection?>(nil)
            let consumed = Shared(0)
            let maxPending = Shared(0)
            listener.start(
                queue: serverQueue,
                onAccept: { socket in
                    let connection = Connection(socket: socket, queue: serverQueue)
                    serverConnection.update { $0 = connection }
                    connection.startReading(
                        { chunk in
                            consumed.update { $0 += chunk.count }
                            connection.write([UInt8](repeating: 0x35, count: 16 * chunk.count))
                            maxPending.update { $0 = max($0, connection.pendingWriteBytes) }
                        }, onClose: { _ in })
                }, onError: { _ in })
            let fd = blockingConnect(to: listener.localAddress)
            try #require(fd >= 0)
            defer { _ = Glibc.close(fd) }
            #expect(poll(seconds: 5) { serverConnection.get() != nil })
            let server = try #require(serverConnection.get())
            // Send without reading until the socket would block for a while: the server has stopped reading.
            // A small send buffer on our side keeps what the kernels hold (and so what this test sends) small.
            var sendBuffer: Int32 = 64 * 1024
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sendBuffer, socklen_t(MemoryLayout<Int32>.size))
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            let block = [UInt8](repeating: 0x41, count: 4096)
            var sent = 0
            var stalled = false
            while sent < 8 * 1024 * 1024 {
                let n = block.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n > 0 {
                    sent += n
                    continue
                }
                var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                if Glibc.poll(&pfd, 1, 1000) == 0 {
                    stalled = true
                    break
                }
            }
            #expect(stalled, "the server kept reading although nobody took its output (sent \(sent) bytes)")
            #expect(serverQueue.sync { server.isHeldByBacklog })
            let bound = Connection.outputHighWater + 16 * Connection.readChunkSize
            #expect(maxPending.get() <= bound)
            // Now read everything: the server resumes and consumes all that was sent.
            var buffer = [UInt8](repeating: 0, count: 256 * 1024)
            let done = poll(seconds: 30) {
                _ = buffer.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                return consumed.get() == sent
            }
            #expect(done, "server consumed \(consumed.get()) of \(sent) bytes")
            serverQueue.sync { server.close(afterFlush: false) }
        }

        /// A peer that never reads must not keep a draining connection open forever.
        @Test func drainGivesUpAfterItsTimeout() throws {
            let listener = try Listener.bind(try address("127.0.0.1:0"))
            defer { listener.close() }
            let serverQueue = DispatchQueue(label: "server")
            let serverConnection = Shared<Connection?>(nil)
            let completions = Shared(0)
            listener.start(
                queue: serverQueue,
                onAccept: { socket in
                    let connection = Connection(socket: socket, queue: serverQueue)
                    serverConnection.update { $0 = connection }
                    connection.write([UInt8](repeating: 0x2e, count: 16 * 1024 * 1024)) {
                        completions.update { $0 += 1 }
                    }
                    connection.close(afterFlush: true, drainTimeout: .milliseconds(200))
                }, onError: { _ in })
            let clientQueue = DispatchQueue(label: "client")
            let client = try #require(try connectAndWait(to: listener.localAddress, queue: clientQueue)?.get())
            #expect(poll(seconds: 5) { serverConnection.get() != nil })
            let server = try #require(serverConnection.get())
            let serverSocket = try #require(SocketIdentity(fd: server.fd))
            #expect(serverQueue.sync { server.isClosed && server.pendingWriteBytes > 0 }, "still draining")
            // The client never reads; the server's fd goes away after the drain timeout.
            #expect(poll(seconds: 5) { !serverSocket.isOpen })
            #expect(serverQueue.sync { server.pendingWriteBytes } == 0)
            #expect(completions.get() == 0)
            clientQueue.sync { client.close() }
        }

        @Test func descriptorsAreNonBlockingAndCloseOnExec() throws {
            #expect(accept4Function != nil, "accept4 should be found in glibc")
            let accepted = Shared<[AcceptedSocket]>([])
            let listener = try Listener.bind(try address("127.0.0.1:0"))
            defer { listener.close() }
            #expect(isNonBlockingAndCloseOnExec(listener.fd))
            listener.start(
                queue: DispatchQueue(label: "l"), onAccept: { socket in accepted.update { $0.append(socket) } },
                onError: { _ in })
            let queue = DispatchQueue(label: "client")
            let client = try #require(try connectAndWait(to: listener.localAddress, queue: queue)?.get())
            #expect(isNonBlockingAndCloseOnExec(client.fd))
            #expect(poll(seconds: 5) { accepted.get().count == 1 })
            for socket in accepted.get() {
                #expect(isNonBlockingAndCloseOnExec(socket.fd))
                socket.close()
            }
            queue.sync { client.close() }
        }

        @Test func closeIsIdempotentAndDropsLaterWrites() throws {
            let server = try EchoServer(try address("127.0.0.1:0"))
            defer { server.stop() }
            let queue = DispatchQueue(label: "client")
            let client = try #require(try connectAndWait(to: server.listener.localAddress, queue: queue)?.get())
            let completions = Shared(0)
            queue.sync {
                client.write(Array("QUIT\r\n".utf8)) { completions.update { $0 += 1 } }
                client.close()
                client.close()
                client.close(afterFlush: false)
                client.write(Array("late".utf8)) { completions.update { $0 += 1 } }
            }
            #expect(queue.sync { client.isClosed && client.pendingWriteBytes == 0 })
            #expect(completions.get() == 1)
            #expect(poll(seconds: 5) { server.accepted == 1 && server.liveConnections == 0 })
        }
    }
}

private func isNonBlockingAndCloseOnExec(_ fd: Int32) -> Bool {
    (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0 && (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0
}
