// Shared test helpers: one deterministic PRNG for every randomized test, and a watch over a
// stream recording's buffer (the relay's and the flight's tests).
@testable import Engine
import Reactor

/// Reproducible random sequences for the randomized tests (Reactor's SplitMix64).
typealias TestRNG = SplitMix64

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
