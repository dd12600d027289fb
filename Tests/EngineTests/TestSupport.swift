// Shared test helpers: one deterministic PRNG for every randomized test, and a watch over a
// stream recording's buffer (the relay's and the flight's tests).
@testable import Engine

/// SplitMix64: reproducible random sequences for the randomized tests.
struct TestRNG: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A stream's recording watched read by read (a relay's or a flight's): from the second read on it
/// must have room ahead (StreamRelay.recordingFloorBytes at least) and stay in one buffer.
struct RecordingBufferWatch {
    private var buffers: Set<UnsafeRawPointer?> = []
    private(set) var roomAheadEveryTime = true

    mutating func saw(_ recording: [UInt8], afterRead k: Int) {
        guard k >= 1 else { return }
        if recording.capacity < StreamRelay.recordingFloorBytes { roomAheadEveryTime = false }
        buffers.insert(recording.withUnsafeBytes { $0.baseAddress })
    }

    var stayedInOneBuffer: Bool { buffers.count == 1 }
}
