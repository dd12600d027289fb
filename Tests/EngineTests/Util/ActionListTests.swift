// ActionList as a value: random appends give the same elements, order and equality as an array.
import Testing
@testable import Engine

@Suite struct ActionListTests {
    @Test func behavesAsTheArrayOfItsAppends() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<500 {
            let n = Int.random(in: 0...6, using: &rng)
            let values = (0..<n).map { _ in Int.random(in: 0...3, using: &rng) }
            var list = ActionList<Int>()
            for v in values { list.append(v) }
            #expect(Array(list) == values)
            #expect(list.count == values.count)
            #expect(list.isEmpty == values.isEmpty)
            #expect(list.first == values.first)
            #expect(list == ActionList(values))
            // A list that differs in one element, or in length, is not equal.
            if n > 0 {
                var other = values
                other[Int.random(in: 0..<n, using: &rng)] += 1
                #expect(list != ActionList(other))
                #expect(list != ActionList(values.dropLast()))
            }
            #expect(list != ActionList(values + [0]))
        }
        let literal: ActionList<Int> = [1, 2, 3]
        #expect(Array(literal) == [1, 2, 3])
        #expect(([] as ActionList<Int>).isEmpty)
    }
}
