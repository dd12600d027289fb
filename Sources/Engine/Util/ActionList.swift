// ActionList: the actions a machine returns for one event, when an event may cause several. Most
// events cause none or one (a unique miss's flight: one `claim`, one `lead`), which this holds
// inline; only a second one allocates. An array per event cost a heap allocation each time.
// A collection of its elements, in order, comparable with an array literal (tests read it as
// they read an array). Pure: no imports, no I/O.

public struct ActionList<Element> {
    fileprivate enum Storage {
        case none
        case one(Element)
        case many([Element])
    }
    private var storage: Storage

    public init() { storage = .none }

    public init<S: Sequence>(_ elements: S) where S.Element == Element {
        self.init()
        for e in elements { append(e) }
    }

    public mutating func append(_ e: Element) {
        switch storage {
        case .none: storage = .one(e)
        case .one(let first): storage = .many([first, e])
        case .many(var all):
            storage = .none  // the array's storage stays unique while it grows
            all.append(e)
            storage = .many(all)
        }
    }
}

extension ActionList: RandomAccessCollection {
    public var startIndex: Int { 0 }
    public var endIndex: Int {
        switch storage {
        case .none: return 0
        case .one: return 1
        case .many(let all): return all.count
        }
    }
    public subscript(i: Int) -> Element {
        switch storage {
        case .none: preconditionFailure("index \(i) of no actions")
        case .one(let e):
            precondition(i == 0, "index \(i) of one action")
            return e
        case .many(let all): return all[i]
        }
    }
}

extension ActionList: ExpressibleByArrayLiteral {
    /// Inlined, so the literal's temporary array (`return [.lead(...)]`) stays on the stack.
    @inline(__always)
    public init(arrayLiteral elements: Element...) {
        self.init()
        for e in elements { append(e) }
    }
}

extension ActionList: Equatable where Element: Equatable {
    public static func == (a: ActionList, b: ActionList) -> Bool { a.elementsEqual(b) }
}

extension ActionList: Sendable where Element: Sendable {}

extension ActionList: CustomStringConvertible {
    public var description: String { Array(self).description }
}

extension ActionList.Storage: Sendable where Element: Sendable {}
