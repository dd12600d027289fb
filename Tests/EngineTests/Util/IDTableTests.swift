// IDTable against a Dictionary world model: random inserts, replacements, removals and lookups,
// with ids dense (a counter, the real use) and sparse (runs that wrap, shifts on removal).
import Testing
@testable import Engine

@Suite struct IDTableTests {
    @Test func behavesAsADictionary() {
        var rng = SystemRandomNumberGenerator()
        for round in 0..<40 {
            var table = IDTable<Int>()
            var model: [UInt64: Int] = [:]
            // Dense ids (a counter's), or a few sparse ones that collide often in a small table.
            let universe: [UInt64] = round % 2 == 0
                ? (1...64).map { UInt64($0) }
                : (0..<24).map { _ in UInt64.random(in: 0...UInt64.max, using: &rng) }
            for _ in 0..<300 {
                let k = universe.randomElement(using: &rng)!
                switch Int.random(in: 0..<4, using: &rng) {
                case 0, 1:
                    let v = Int.random(in: 0..<1000, using: &rng)
                    table[k] = v
                    model[k] = v
                case 2:
                    #expect(table.removeValue(for: k) == model.removeValue(forKey: k))
                default:
                    table[k] = nil
                    model[k] = nil
                }
                #expect(table.count == model.count)
                #expect(table.isEmpty == model.isEmpty)
                for u in universe {
                    #expect(table[u] == model[u])
                    #expect(table.contains(u) == (model[u] != nil))
                }
            }
        }
    }

    @Test func growsPastItsFirstSize() {
        var table = IDTable<UInt64>()
        for k in UInt64(1)...1000 { table.insert(k * 3, for: k) }
        #expect(table.count == 1000)
        for k in UInt64(1)...1000 { #expect(table[k] == k * 3) }
        for k in stride(from: UInt64(1), through: 1000, by: 2) { #expect(table.removeValue(for: k) == k * 3) }
        #expect(table.count == 500)
        for k in UInt64(1)...1000 { #expect(table[k] == (k % 2 == 0 ? k * 3 : nil)) }
        #expect(table[0] == nil && table[1001] == nil)
    }
}
