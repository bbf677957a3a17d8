/// SplitMix64: a tiny deterministic generator for the equal-preference shuffle. The same seed gives the same
/// order on every platform and Swift version (unlike `shuffle(using:)`, whose algorithm is not promised).
struct SeededGenerator {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Fisher–Yates with our own bounded draw.
    mutating func shuffled<Element>(_ items: [Element]) -> [Element] {
        var result = items
        guard result.count > 1 else { return result }
        for index in stride(from: result.count - 1, to: 0, by: -1) {
            let pick = Int(next() % UInt64(index + 1))
            result.swapAt(index, pick)
        }
        return result
    }
}
