// ProcessStats: parsing /proc/self/stat and /proc/stat text, and the reader against the real /proc.
import Testing

@testable import Engine

#if canImport(Glibc)
import Glibc
#endif

@Suite struct ProcessStatsTests {
    /// A real line (Linux 6.x) with a `comm` holding spaces and a `)`.
    static let stat = "4242 (engine) (x y)) S 1 4242 4242 0 -1 4194560 2310 0 0 0 150 75 0 0 20 0 1 0 123456 "
        + "33857536 5267 18446744073709551615 1 1 0 0 0 0 0 4096 17638 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"

    @Test func parsesStatFromTheLastParenthesis() throws {
        let s = try #require(ProcessStats.parseStat(Self.stat))
        #expect(s.utimeTicks == 150 && s.stimeTicks == 75)
        #expect(s.startTicks == 123456)
        #expect(s.virtualBytes == 33_857_536)
        #expect(s.residentPages == 5267)
    }

    @Test(arguments: ["", "4242 (engine", "4242 (engine) S 1 2 3", "4242 (e) S 1 4242 4242 0 -1 0 0 0 0 0 x 75 0 0 20 0 1 0 1 2 3"])
    func refusesShortOrBrokenStat(text: String) {
        #expect(ProcessStats.parseStat(text) == nil)
    }

    @Test func bootTime() {
        #expect(ProcessStats.parseBootTime("cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n") == 1_700_000_000)
        #expect(ProcessStats.parseBootTime("cpu  1 2 3\n") == nil)
    }

    @Test func combinesIntoSecondsAndBytes() throws {
        let s = try #require(ProcessStats.parseStat(Self.stat))
        let p = try #require(ProcessStats(stat: s, bootTime: 1_700_000_000, ticksPerSecond: 100, pageSize: 4096, openFDs: 12, maxFDs: 1024))
        #expect(p.cpuSeconds == 2.25)
        #expect(p.residentMemoryBytes == 5267 * 4096)
        #expect(p.virtualMemoryBytes == 33_857_536)
        #expect(p.startTimeSeconds == 1_700_000_000 + 1234.56)
        #expect(p.openFDs == 12 && p.maxFDs == 1024)
        #expect(ProcessStats(stat: s, bootTime: 0, ticksPerSecond: 0, pageSize: 4096, openFDs: nil, maxFDs: nil) == nil)
    }

    /// The reader against this test process: plausible values, and fds opened here are counted
    /// (other tests run in parallel and open and close their own, hence a lower bound).
    @Test func readsThisProcess() throws {
        let p = try #require(ProcessStats.readSelf())
        #expect(p.residentMemoryBytes > 1 << 20)
        #expect(p.virtualMemoryBytes >= p.residentMemoryBytes)
        #expect(p.cpuSeconds > 0)
        #expect(p.startTimeSeconds > 1_600_000_000)
        let extra = (0..<50).map { _ in open("/dev/null", O_RDONLY) }
        defer { for fd in extra { close(fd) } }
        #expect(extra.allSatisfy { $0 >= 0 })
        let n = try #require(ProcessStats.readSelf()?.openFDs)
        #expect(n >= 53)
        #expect(n <= (p.maxFDs ?? Int.max))
    }
}
