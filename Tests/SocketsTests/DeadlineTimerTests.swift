import Dispatch
import Testing

@testable import Sockets

extension SocketIO {
    @Suite struct DeadlineTimerTests {
        /// Moving the deadline later does not let the earlier time fire: expiry comes once, after the last deadline.
        @Test func aLaterDeadlineReplacesTheEarlierOne() throws {
            let queue = DispatchQueue(label: "timer")
            let expiries = Shared<[DispatchTime]>([])
            let timer = DeadlineTimer(queue: queue) { expiries.update { $0.append(.now()) } }
            let last: DispatchTime = queue.sync {
                timer.arm(after: .milliseconds(30))
                timer.arm(after: .milliseconds(120))
                return .now() + .milliseconds(120)
            }
            #expect(poll(seconds: 5) { !expiries.get().isEmpty })
            let fired = try #require(expiries.get().first)
            #expect(fired >= last, "expired before the last deadline")
            queue.sync { timer.cancel() }
        }

        /// Moving the deadline earlier reschedules at once; re-arming after an expiry works again.
        @Test func anEarlierDeadlineFiresEarlierAndTheTimerCanBeReused() throws {
            let queue = DispatchQueue(label: "timer")
            let expiries = Shared(0)
            let timer = DeadlineTimer(queue: queue) { expiries.update { $0 += 1 } }
            queue.sync {
                timer.arm(after: .seconds(3600))
                timer.arm(after: .milliseconds(20))
            }
            #expect(poll(seconds: 5) { expiries.get() == 1 })
            queue.sync { timer.arm(after: .milliseconds(20)) }
            #expect(poll(seconds: 5) { expiries.get() == 2 })
            queue.sync { timer.cancel() }
        }
    }
}
