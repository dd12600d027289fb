// SplitMix64: a small, fast, seedable generator (Steele, Lea, Flood 2014), shared by the Engine's
// request ids (FastRandom, seeded from the system generator) and the tests' reproducible random
// sequences. Not for secrets.

public struct SplitMix64: RandomNumberGenerator {
    @usableFromInline var state: UInt64

    @inlinable public init(seed: UInt64) { state = seed }

    @inlinable public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
