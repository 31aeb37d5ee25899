// track() latency through the Kotlin binding on the JVM: the workload of
// the Rust SDK's `track_latency` example (EVENTS events from one thread,
// 3 properties varying per event, built before the timer starts), after
// WARMUP untimed calls so the JIT has compiled the path. Prints one JSON
// line. Run by sdks/bench-track.sh.
package tally

import java.io.File

private val SCREENS = listOf("home", "search", "cart", "checkout")
private val BUTTONS = listOf("buy", "back", "share")

fun main(args: Array<String>) {
    val events = args.getOrNull(0)?.toInt() ?: 100_000
    val warmup = args.getOrNull(1)?.toInt() ?: 20_000
    val dir = tempDir("latency")
    // Nothing listens on port 9: capture and persistence alone.
    val tracker = TallyTracker(config("http://127.0.0.1:9", dir))
    fun props(i: Int) = mapOf(
        "screen" to PropValue.Text(SCREENS[i % 4]),
        "button" to PropValue.Text(BUTTONS[i % 3]),
        "variant" to PropValue.Int((i % 7).toLong()),
    )
    repeat(warmup) { i -> runCatching { tracker.track("bench.warmup", props(i)) } }
    tracker.flush()
    val ns = LongArray(events)
    var refused = 0
    for (i in 0 until events) {
        val p = props(i)
        val t = System.nanoTime()
        try {
            tracker.track("bench.track", p)
        } catch (e: TallyException) {
            refused++
        }
        ns[i] = System.nanoTime() - t
    }
    tracker.shutdown(30_000u)
    dir.deleteRecursively()
    ns.sort()
    fun pct(q: Double) = ns[(Math.ceil(events * q).toInt().coerceIn(1, events)) - 1] / 1000.0
    println("""{"binding":"kotlin-jvm","events":$events,"warmup":$warmup,"refused":$refused,""" +
        """"track_p50_us":${pct(0.50)},"track_p99_us":${pct(0.99)},"track_p999_us":${pct(0.999)}}""")
}
