import NetAddress

/// `connect_strategy = happy-eyeballs` (RFC 8305 adapted to SMTP) as a pure function of a route
/// plan: the plan's attempts split into MX preference levels (never raced against each other), and within a level
/// the addresses interleaved by family (First Address Family Count = 1), starting with the level's first attempt
/// (the preferred family, or the transport cache's entry when the planner moved it to the front). Attempt n of a
/// level starts n × `connection_attempt_delay` after the first at the latest; a failed attempt starts the next at
/// once, so these offsets are upper bounds.
public struct HappyEyeballsSchedule: Sendable, Hashable {
    public struct Slot: Sendable, Hashable {
        public var attempt: PlannedAttempt
        /// When the attempt starts at the latest, counted from the start of its level.
        public var startsAfter: Duration
    }

    public struct Level: Sendable, Hashable {
        public var preference: UInt16
        /// 1 for the first level of the plan, 2 for the next, ... (the `mx_rank` metric label).
        public var rank: Int
        public var slots: [Slot]
    }

    public var delay: Duration
    public var levels: [Level]

    public init(attempts: [PlannedAttempt], delay: Duration) {
        self.delay = delay
        levels = Self.levels(attempts).enumerated().map { index, level in
            let ordered = Self.interleave(level)
            return Level(
                preference: level.first?.preference ?? 0, rank: index + 1,
                slots: ordered.enumerated().map { position, attempt in
                    Slot(attempt: attempt, startsAfter: delay * position)
                })
        }
    }

    /// Consecutive attempts with the same MX preference, in plan order (the planner sorts by preference, so each
    /// level appears once).
    public static func levels(_ attempts: [PlannedAttempt]) -> [[PlannedAttempt]] {
        var levels: [[PlannedAttempt]] = []
        for attempt in attempts {
            if let last = levels.last?.last, last.preference == attempt.preference {
                levels[levels.count - 1].append(attempt)
            } else {
                levels.append([attempt])
            }
        }
        return levels
    }

    /// RFC 8305 §4 interleaving: the first attempt's family, then the other, alternating while both have addresses
    /// left, each family keeping its plan order; the rest of the longer family at the end.
    public static func interleave(_ level: [PlannedAttempt]) -> [PlannedAttempt] {
        guard let first = level.first else { return [] }
        var queues: [AddressFamily: ArraySlice<PlannedAttempt>] = [
            .ipv4: ArraySlice(level.filter { $0.family == .ipv4 }),
            .ipv6: ArraySlice(level.filter { $0.family == .ipv6 }),
        ]
        var family = first.family
        var ordered: [PlannedAttempt] = []
        while ordered.count < level.count {
            let other: AddressFamily = family == .ipv4 ? .ipv6 : .ipv4
            if let next = queues[family]?.popFirst() {
                ordered.append(next)
                family = other
            } else {
                family = other
            }
        }
        return ordered
    }

    /// What `dualmta route` prints under the plan when the strategy is happy-eyeballs.
    public var text: String {
        var lines = [
            "happy-eyeballs schedule (connection_attempt_delay \(Self.milliseconds(delay))ms; a failed attempt starts "
                + "the next one at once; the first connection wins, the others are closed):"
        ]
        for (index, level) in levels.enumerated() {
            var heading = "  pref \(level.preference)"
            if index > 0 { heading += ", only after every pref \(levels[index - 1].preference) attempt failed" }
            lines.append(heading + ":")
            for slot in level.slots {
                let offset = "+\(Self.milliseconds(slot.startsAfter))ms"
                let padded = offset + String(repeating: " ", count: max(1, 9 - offset.count))
                var line = "    \(padded)\(slot.attempt.mxHost) \(slot.attempt.family) \(slot.attempt.endpoint)"
                if let note = slot.attempt.note { line += "  (\(note))" }
                lines.append(line)
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
