// The Kotlin binding on the JVM, through JNA, against the built library
// and a real `tally serve`: the way Android libraries test a Rust core on
// the host. The Swift binding has the same API, so these speak for it too.
package tally

import java.io.File
import java.util.concurrent.ConcurrentHashMap
import java.util.concurrent.TimeUnit

const val EVENTS = 50L

fun trackedOfflineThenSyncedWhenTheCollectorComesUp() {
    val port = freePort()
    val device = tempDir("offline")
    val tracker = TallyTracker(config("http://127.0.0.1:$port", device))
    for (i in 0 until EVENTS) {
        val props = mapOf("i" to PropValue.Int(i), "screen" to PropValue.Text("cart"))
        assertEquals(i + 1, tracker.track("Item Added", props).toLong(), "seq")
    }
    tracker.flush()
    val before = tracker.health()
    assertEquals(listOf(EVENTS, 0L, EVENTS),
        listOf(before.pending.toLong(), before.accepted.toLong(), before.tracked.toLong()), "offline")

    Server(tempDir("offline-server"), port).use { server ->
        assertTrue(tracker.waitUntilSynced(60_000u), "synced: ${tracker.health()}")
        assertEquals(EVENTS, server.stat("events"), "events")
        assertEquals(EVENTS, server.stat("accepted"), "accepted")
        assertEquals(0L, server.stat("duplicate"), "duplicate")
        assertEquals((1..EVENTS).toList(), server.installSeqs(tracker.installId()), "seqs")
    }
    tracker.shutdown(5_000u)
}

fun healthNumbersAreExact() {
    Server(tempDir("health-server")).use { server ->
        val tracker = TallyTracker(config(server.base, tempDir("health")))
        tracker.trackJson("Order Completed", """{"total":42.5,"items":[1,2]}""",
            TrackOptions(priority = Priority.CRITICAL, dedupKey = "order-1"))
        tracker.trackJson("Order Completed", """{"total":42.5}""", TrackOptions(dedupKey = "order-1"))
        tracker.identify("user-7", mapOf("plan" to PropValue.Text("pro")))
        val refused = assertThrows<TallyException.Invalid> { tracker.track("x".repeat(300)) }
        assertEquals("event_name_too_long", refused.reason, "reason")
        assertThrows<TallyException.InvalidProperties> { tracker.trackJson("Bad", "[1, 2]") }
        assertTrue(tracker.waitUntilSynced(60_000u), "synced")
        val h = tracker.health()
        assertEquals(listOf(3uL, 0uL, 2uL, 1uL), listOf(h.tracked, h.pending, h.accepted, h.duplicate), "health")
        assertEquals(mapOf("event_name_too_long" to 1uL), h.refused, "refused")
        assertEquals(emptyMap<String, ULong>(), h.rejected, "rejected")
        assertEquals(emptyMap<String, ULong>(), h.dropped, "dropped")
        assertEquals(Consent.GRANTED, h.consent, "consent")
        assertTrue(h.lastSuccessMs != null, "last success")
        assertEquals(2L, server.stat("events"), "one event per dedup key")
        tracker.shutdown(5_000u)
    }
}

fun consentDeniedStoresNothing() {
    Server(tempDir("consent-server")).use { server ->
        val tracker = TallyTracker(config(server.base, tempDir("consent"), Consent.PENDING))
        repeat(5) { tracker.track("Before Consent") }
        tracker.flush()
        assertEquals(5uL, tracker.health().pending, "pending before")
        tracker.setConsent(Consent.DENIED)
        assertThrows<TallyException.ConsentDenied> { tracker.track("After Denial") }
        val h = tracker.health()
        assertEquals(listOf(0uL, 0uL), listOf(h.pending, h.pendingBytes), "shredded")
        assertEquals(mapOf("consent_denied" to 5uL), h.dropped, "dropped")
        assertEquals(mapOf("consent_denied" to 1uL), h.refused, "refused")
        assertTrue(!tracker.waitUntilSynced(1_000u), "nothing may be sent while denied")
        assertEquals(0L, server.stat("events"), "events")
        tracker.shutdown(5_000u)
        assertThrows<TallyException.ShutDown> { tracker.track("After Shutdown") }
    }
}

/** An app's key store: a map here; the Android Keystore in an app. */
class AppKeys : KeyStore {
    val keys = ConcurrentHashMap<UInt, ByteArray>()
    val calls: MutableList<String> = java.util.Collections.synchronizedList(mutableListOf())

    override fun load(id: UInt): ByteArray? = keys[id].also { calls.add("load $id") }
    override fun store(id: UInt, key: ByteArray) { calls.add("store $id"); keys[id] = key }
    override fun list(): List<UInt> = keys.keys.toList()
    override fun delete(id: UInt) { calls.add("delete $id"); keys.remove(id) }
}

fun aKeyStoreImplementedInKotlinHoldsTheKeys() {
    val device = tempDir("keys")
    val keys = AppKeys()
    val noCollector = "http://127.0.0.1:${freePort()}"
    val tracker = TallyTracker(config(noCollector, device), keys)
    tracker.track("Sealed")
    tracker.flush() // sealed under key 1 before the rotation
    tracker.rotateKey()
    tracker.track("Sealed Again")
    tracker.shutdown(5_000u)
    assertEquals(listOf(1u, 2u), keys.keys.keys.sorted(), "key ids")
    assertTrue(keys.keys.values.all { it.size == 32 }, "32-byte keys")
    assertTrue(keys.calls.contains("store 1"), "the SDK stored its first key: ${keys.calls}")
    val keyFiles = device.walkTopDown().filter { it.name.startsWith("key-") }.count()
    assertEquals(0, keyFiles, "no key in the app's files")

    // Reopened with the same store, both events are readable.
    val again = TallyTracker(config(noCollector, device), keys)
    val h = again.health()
    assertEquals(listOf(2uL, 0uL), listOf(h.pending, h.corrupt), "readable")
    again.shutdown(5_000u)
}

fun aJvmKilledMidBurstResumesWithEveryFlushedEventOnce() {
    Server(tempDir("kill-server")).use { server ->
        val device = tempDir("kill")
        val java = File(System.getProperty("java.home"), "bin/java").path
        val child = ProcessBuilder(
            java, "-cp", System.getProperty("java.class.path"),
            "-Djna.library.path=" + System.getProperty("jna.library.path"),
            "tally.BurstKt", server.base, device.path,
        ).redirectError(ProcessBuilder.Redirect.INHERIT).start()
        var flushed = 0L
        val lines = child.inputStream.bufferedReader()
        while (flushed < 3_000) {
            flushed = lines.readLine()?.toLong() ?: break
        }
        child.destroyForcibly() // SIGKILL on Linux
        child.waitFor(30, TimeUnit.SECONDS)
        assertEquals(137, child.exitValue(), "killed by SIGKILL")
        assertTrue(flushed >= 3_000, "the child flushed $flushed")

        val tracker = TallyTracker(config(server.base, device))
        assertTrue(tracker.waitUntilSynced(120_000u), "synced: ${tracker.health()}")
        val seqs = server.installSeqs(tracker.installId())
        // Every flushed event once; what was accepted after the last flush
        // may be lost with the process (its seqs are reused), never doubled.
        assertEquals((1L..seqs.size).toList(), seqs, "each seq once, no gap")
        assertTrue(seqs.size >= flushed, "${seqs.size} stored, $flushed flushed")
        assertEquals(seqs.size.toLong(), server.stat("events"), "events")
        tracker.shutdown(5_000u)
    }
}

fun theNetworkAndABackgroundSyncAsAnAppWiresThem() {
    Server(tempDir("background-server")).use { server ->
        val tracker = TallyTracker(config(server.base, tempDir("background")).copy(autoUpload = false))
        tracker.setNetwork(online = false, metered = false)
        repeat(EVENTS.toInt()) { i -> tracker.track("Queued", mapOf("i" to PropValue.Int(i.toLong()))) }
        val offline = tracker.runBackgroundSync(10_000u)
        assertEquals(BackgroundSync(0uL, EVENTS.toULong(), BackgroundOutcome.OFFLINE), offline, "offline")
        assertEquals(0L, server.stat("events"), "nothing sent offline")

        tracker.setNetwork(online = true, metered = false)
        val online = tracker.runBackgroundSync(60_000u)
        assertEquals(BackgroundSync(EVENTS.toULong(), 0uL, BackgroundOutcome.DONE), online, "online")
        assertEquals(EVENTS, server.stat("events"), "events")
        tracker.shutdown(5_000u)
    }
}

fun main(args: Array<String>) {
    val tests = listOf(
        "tracked offline, synced when the collector comes up" to ::trackedOfflineThenSyncedWhenTheCollectorComesUp,
        "health numbers are exact" to ::healthNumbersAreExact,
        "consent denied stores nothing" to ::consentDeniedStoresNothing,
        "a key store implemented in Kotlin holds the keys" to ::aKeyStoreImplementedInKotlinHoldsTheKeys,
        "a JVM killed mid-burst resumes with every flushed event once" to ::aJvmKilledMidBurstResumesWithEveryFlushedEventOnce,
        "the network and a background sync as an app wires them" to ::theNetworkAndABackgroundSyncAsAnAppWiresThem,
        "the event version reaches the collector" to ::theEventVersionReachesTheCollector,
        "wrong calls of the generated code do not compile" to ::wrongCallsOfTheGeneratedCodeDoNotCompile,
    )
    kotlin.system.exitProcess(runTests(tests, args.firstOrNull()))
}
