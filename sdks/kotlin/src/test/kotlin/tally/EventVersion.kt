// The event version from Kotlin: `TrackOptions(eventVersion = ...)` and the
// functions `tally plan codegen --lang kotlin` generates for the fixture
// plan (crates/tally-plan/tests/fixtures/codegen/Tracking.kt, compiled with
// these tests; crates/tally-plan's tests keep it equal to the generator's
// output) reach a real `tally serve` in `context.tally.event_version`, and
// a wrong call of the generated functions (or a version that is no `UInt`)
// does not compile.
package tally

import java.io.File
import java.util.concurrent.TimeUnit
import tally.plan.CART_ITEM_ADDED_VERSION
import tally.plan.ORDER_COMPLETED_VERSION
import tally.plan.OrderCompletedCurrency
import tally.plan.trackCartItemAdded
import tally.plan.trackOrderCompleted

/** `[seq, event, event_version, priority, dedup_key]` of an exported line (null when absent). */
fun stored(line: String): List<Any?> {
    fun text(key: String) = Regex("\"$key\":\"([^\"]*)\"").find(line)?.groupValues?.get(1)
    fun number(key: String) = Regex("\"$key\":(\\d+)").find(line)?.groupValues?.get(1)?.toLong()
    return listOf(number("seq"), text("event"), number("event_version"), text("priority"), text("dedup_key"))
}

fun theEventVersionReachesTheCollector() {
    Server(tempDir("version-server")).use { server ->
        val tracker = TallyTracker(config(server.base, tempDir("version")))
        val seqs = listOf(
            tracker.track("Item Added", mapOf("sku" to PropValue.Text("a")), TrackOptions(eventVersion = 7u)),
            // 0 is sent as it is, as by the Rust SDK: the collector counts a
            // version its plan lacks as `unknown_version`.
            tracker.trackJson("Zero", "{}", TrackOptions(dedupKey = "z-1", eventVersion = 0u)),
            tracker.track("No Version"),
            tracker.trackOrderCompleted(
                amount = 42.5, currency = OrderCompletedCurrency.EUR, orderId = "o-1", itemCount = 3, dedupKey = "o-1",
            ),
            tracker.trackCartItemAdded(productId = "p1", quantity = 2, tags = listOf("sale")),
        )
        assertEquals((1uL..5uL).toList(), seqs, "seqs")
        assertTrue(tracker.waitUntilSynced(60_000u), "synced: ${tracker.health()}")
        val rows = server.exported().map(::stored).sortedBy { it[0] as Long }
        // The fixture plan has Order Completed at version 2 (critical) and
        // Cart Item Added at version 1.
        assertEquals(
            listOf(
                listOf(1L, "Item Added", 7L, null, null),
                listOf(2L, "Zero", 0L, null, "z-1"),
                listOf(3L, "No Version", null, null, null),
                listOf(4L, "Order Completed", 2L, "critical", "o-1"),
                listOf(5L, "Cart Item Added", 1L, null, null),
            ),
            rows, "stored",
        )
        assertEquals(listOf(2u, 1u), listOf(ORDER_COMPLETED_VERSION, CART_ITEM_ADDED_VERSION), "constants")
        val h = tracker.health()
        assertEquals(listOf(5uL, 5uL), listOf(h.tracked, h.accepted), "health")
        tracker.shutdown(5_000u)
    }
}

/** A caller of the generated functions; each wrong call below changes one thing of it. */
const val GOOD_CALLER = """
import tally.TallyTracker
import tally.TrackOptions
import tally.plan.*

fun checkout(tracker: TallyTracker): ULong {
    tracker.track("Song Played", null, TrackOptions(eventVersion = 3u))
    tracker.trackCartItemAdded(productId = "p1", quantity = 2L, tags = listOf("sale"))
    return tracker.trackOrderCompleted(amount = 42.5, currency = OrderCompletedCurrency.EUR, orderId = "o-1")
}
"""

fun wrongCallsOfTheGeneratedCodeDoNotCompile() {
    // file name to (the caller, what kotlinc must say about it; null: nothing).
    val callers = mapOf(
        "good" to (GOOD_CALLER to null),
        "unplanned" to (GOOD_CALLER.replace("tags = listOf(\"sale\")", "tags = listOf(\"sale\"), colour = \"red\"")
            to "no parameter with name 'colour' found."),
        "missing" to (GOOD_CALLER.replace("currency = OrderCompletedCurrency.EUR, ", "")
            to "no value passed for parameter 'currency'."),
        "enum" to (GOOD_CALLER.replace("OrderCompletedCurrency.EUR", "OrderCompletedCurrency.JPY")
            to "unresolved reference 'JPY'."),
        "type" to (GOOD_CALLER.replace("quantity = 2L", "quantity = \"2\"")
            to "argument type mismatch: actual type is 'String', but 'Long' was expected."),
        // The binding's member is a `UInt`, as the SDK's u32: a negative
        // version does not compile.
        "version" to (GOOD_CALLER.replace("eventVersion = 3u", "eventVersion = -3")
            to "argument type mismatch: actual type is 'Int', but 'UInt?' was expected."),
    )
    val dir = tempDir("codegen-calls")
    val files = callers.map { (name, caller) ->
        File(dir, "$name.kt").apply { writeText("package check.$name\n" + caller.first) }
    }
    assertTrue(callers.all { (name, c) -> name == "good" || c.first != GOOD_CALLER }, "every wrong call changes the caller")
    // Compiled against the same classes as these tests: the binding and the generated code.
    val process = ProcessBuilder(
        listOf(env("KOTLINC"), "-nowarn", "-classpath", System.getProperty("java.class.path"),
            "-d", File(dir, "out").path) + files.map { it.path },
    ).redirectErrorStream(true).start()
    val output = process.inputStream.bufferedReader().readText()
    assertTrue(process.waitFor(600, TimeUnit.SECONDS), "kotlinc finished")
    assertTrue(process.exitValue() != 0, "the wrong calls compiled:\n$output")
    val errors = output.lines().filter { it.contains(": error: ") }
    for ((name, caller) in callers) {
        val said = errors.filter { it.contains("$name.kt:") }.map { it.substringAfter(": error: ") }
        assertEquals(listOfNotNull(caller.second), said, "kotlinc on $name.kt (all it said:\n$output)")
    }
}
