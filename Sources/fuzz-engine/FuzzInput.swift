// FuzzInput: how the request, upstream and sse targets read an input. The first byte steers
// (where the payload is cut into pieces, limits, options); the rest is the payload. Keeping the
// steering in one byte lets libFuzzer mutate it on its own, and a seed is a payload with one
// byte in front. The cuts are deterministic: the same input always runs the same way.

struct FuzzInput {
    let control: UInt8
    let payload: UnsafeRawBufferPointer

    init(_ bytes: UnsafeRawBufferPointer) {
        control = bytes.first ?? 0
        payload = bytes.isEmpty ? bytes : UnsafeRawBufferPointer(rebasing: bytes[1...])
    }

    /// Bit `n` (3...7) of the control byte: an option of the target. Bits 0-2 choose the cuts.
    func flag(_ n: Int) -> Bool { control & (1 << n) != 0 }

    /// Largest piece for control bits 0-2: 0 = the payload whole.
    private static let maxPiece = [0, 1, 3, 7, 16, 61, 256, 1500]

    /// The payload cut into consecutive, non-empty pieces of pseudo-random sizes (at most 512
    /// pieces, so one-byte cuts of a long input stay fast); one piece when bits 0-2 are 0.
    func pieces() -> [Range<Int>] {
        let n = payload.count
        var largest = Self.maxPiece[Int(control & 7)]
        if largest == 0 || n == 0 { return n == 0 ? [] : [0..<n] }
        largest = max(largest, n / 256)
        var out: [Range<Int>] = []
        var state = UInt32(control) &* 2_654_435_761 &+ UInt32(truncatingIfNeeded: n)
        var at = 0
        while at < n {
            // xorshift32: sizes vary without a dependency on anything but the input.
            state ^= state << 13
            state ^= state >> 17
            state ^= state << 5
            let size = 1 + Int(state % UInt32(largest))
            let end = min(n, at + size)
            out.append(at..<end)
            at = end
        }
        return out
    }
}
