// RequestID and Frontend.HeaderLines: the cache hit writes the request id and its header lines
// from bytes; they must be what the String and HTTPHeaders forms give.
import Reactor
import Testing

@testable import Engine

@Suite struct RequestIDTests {
    @Test func aNewIdIsSixteenHexDigitsMostSignificantFirst() {
        for v: UInt64 in [0, 1, 0x0123_4567_89ab_cdef, .max] {
            let id = RequestID(client: nil, generated: v)
            let hex = String(v, radix: 16)
            #expect(id.string == String(repeating: "0", count: 16 - hex.count) + hex)
            #expect(id.withBytes { Array($0) } == Array(id.string.utf8))
        }
    }

    @Test func theClientsIdIsKeptAsItIs() {
        for s in ["abc", "a\"b\\c é", String(repeating: "x", count: 128)] {
            let id = RequestID(client: s, generated: 7)
            #expect(id.string == s)
            #expect(id.withBytes { Array($0) } == Array(s.utf8))
        }
    }

    @Test func hitHeaderLinesAreWhatHTTPHeadersWrites() {
        for (model, rid) in [("m", "0123456789abcdef"), ("we\rird\nmodel", "id\r\nwith breaks"), ("", "")] {
            var h = HTTPHeaders()
            h.add("x-routed-model", model)
            h.add("x-request-id", rid)
            h.add("x-cache", "HIT")
            h.add(name: "content-type", "application/json")
            var out = [UInt8](repeating: 0, count: 512)
            let n = out.withUnsafeMutableBytes { o -> Int in
                var lines = Frontend.HeaderLines(at: o.baseAddress!)
                var model = model
                var rid = rid
                model.withUTF8 { lines.add("x-routed-model: ", UnsafeRawBufferPointer($0)) }
                rid.withUTF8 { lines.add("x-request-id: ", UnsafeRawBufferPointer($0)) }
                lines.put(Frontend.HeaderLines.hitTail)
                return lines.count
            }
            #expect(Array(out[0..<n]) == h.block)
        }
    }
}
