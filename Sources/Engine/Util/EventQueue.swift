// EventQueue: style C's "events raised while one is handled are queued and drained afterwards,
// never recursed into", as a value a driver keeps. `append` says whether the caller should drain
// now (nothing was being handled); `next` hands out the events in order and, when none is left,
// ends the draining. Loop-confined like its driver.

struct EventQueue<Event> {
    /// The oldest pending event when it is the only one: a driver usually has one event waiting
    /// at a time (a call that answered at once), which then costs no array (an allocation per
    /// request driver). Always older than anything in `events`.
    private var single: Event?
    private var events: [Event] = []
    private var head = 0
    private(set) var isDraining = false

    /// Queues `e`; true when the caller must now drain (`while let e = next() { handle(e) }`).
    mutating func append(_ e: consuming Event) -> Bool {
        if single == nil && head == events.count {
            single = e
        } else {
            // Room for a few at once (a handled event may queue two or three): one allocation
            // per driver rather than one per growth step.
            if events.capacity == 0 { events.reserveCapacity(4) }
            events.append(e)
        }
        return enter()
    }

    /// Starts draining without queueing first (a fact handled in place); false if already draining.
    mutating func enter() -> Bool {
        guard !isDraining else { return false }
        isDraining = true
        return true
    }

    /// The next queued event, or nil — and then the queue is idle again.
    mutating func next() -> Event? {
        // Moved out (take), not copied out and then released with the nil.
        if let e = single.take() { return e }
        if head < events.count {
            head += 1
            return events[head - 1]
        }
        events.removeAllKeepingCapacity()
        head = 0
        isDraining = false
        return nil
    }
}
