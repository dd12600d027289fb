// FastRandom: request ids without a getrandom(2) syscall per request. SplitMix64 (Reactor) seeded
// once from the system generator; ids must be unique, not secret (the X-Request-Id is echoed to
// clients).
import Reactor

struct FastRandom: RandomNumberGenerator {
    private var g: SplitMix64

    init() {
        var sys = SystemRandomNumberGenerator()
        g = SplitMix64(seed: sys.next())
    }

    mutating func next() -> UInt64 { g.next() }
}
