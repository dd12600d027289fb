// ProcessStats: the standard Prometheus `process_*` figures of one process, parsed from the text
// of /proc/self/stat and /proc/stat (what client_golang and prometheus_client export under the
// same names). Values only; ProcessStats+Read.swift reads the files, Metrics+Prometheus renders.
// Pure: no imports, no I/O.

public struct ProcessStats: Sendable, Equatable {
    /// User plus system CPU time, seconds.
    public var cpuSeconds: Double
    /// Resident set size, bytes.
    public var residentMemoryBytes: Int
    /// Virtual memory size, bytes.
    public var virtualMemoryBytes: Int
    /// Start of the process, seconds since the Unix epoch.
    public var startTimeSeconds: Double
    /// Open file descriptors (nil when /proc/self/fd could not be read).
    public var openFDs: Int?
    /// The soft limit on open file descriptors (nil when unknown).
    public var maxFDs: Int?

    public init(cpuSeconds: Double, residentMemoryBytes: Int, virtualMemoryBytes: Int, startTimeSeconds: Double,
                openFDs: Int?, maxFDs: Int?) {
        self.cpuSeconds = cpuSeconds
        self.residentMemoryBytes = residentMemoryBytes
        self.virtualMemoryBytes = virtualMemoryBytes
        self.startTimeSeconds = startTimeSeconds
        self.openFDs = openFDs
        self.maxFDs = maxFDs
    }

    /// The fields of `/proc/self/stat` (proc(5)) the exposition needs. `comm` (field 2) is in
    /// parentheses and may hold spaces and `)`, so fields are counted from the last `)`: there
    /// field 3 (`state`) is index 0, utime (14) 11, stime (15) 12, starttime (22) 19, vsize (23) 20,
    /// rss (24, pages) 21. nil when the text does not have them.
    public struct Stat: Sendable, Equatable {
        public var utimeTicks: UInt64
        public var stimeTicks: UInt64
        public var startTicks: UInt64
        public var virtualBytes: UInt64
        public var residentPages: UInt64
    }

    public static func parseStat(_ text: String) -> Stat? {
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard fields.count > 21,
              let utime = UInt64(fields[11]), let stime = UInt64(fields[12]), let start = UInt64(fields[19]),
              let vsize = UInt64(fields[20]), let rss = Int64(fields[21])
        else { return nil }
        return Stat(utimeTicks: utime, stimeTicks: stime, startTicks: start, virtualBytes: vsize,
                    residentPages: UInt64(max(rss, 0)))
    }

    /// `btime` (boot time, seconds since the epoch) from the text of `/proc/stat`.
    public static func parseBootTime(_ text: String) -> UInt64? {
        for line in text.split(separator: "\n") where line.hasPrefix("btime ") {
            return UInt64(line.dropFirst(6).filter { $0 != " " })
        }
        return nil
    }

    /// Combines the parsed files: ticks per second (`sysconf(_SC_CLK_TCK)`) and the page size
    /// turn ticks and pages into seconds and bytes; `bootTime` anchors the start time.
    public init?(stat: Stat, bootTime: UInt64, ticksPerSecond: Int, pageSize: Int, openFDs: Int?, maxFDs: Int?) {
        guard ticksPerSecond > 0, pageSize > 0 else { return nil }
        let hz = Double(ticksPerSecond)
        self.init(cpuSeconds: Double(stat.utimeTicks + stat.stimeTicks) / hz,
                  residentMemoryBytes: Int(clamping: stat.residentPages.multipliedReportingOverflow(by: UInt64(pageSize)).partialValue),
                  virtualMemoryBytes: Int(clamping: stat.virtualBytes),
                  startTimeSeconds: Double(bootTime) + Double(stat.startTicks) / hz,
                  openFDs: openFDs, maxFDs: maxFDs)
    }
}
