// Test support for the Kotlin binding on the JVM: a real `tally serve`,
// admin reads, and a tiny runner (no JUnit: the tests run from the
// command line with kotlinc and java alone, see sdks/kotlin/run-tests.sh).
package tally

import java.io.File
import java.net.ServerSocket
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.nio.file.Files
import java.time.Duration
import java.util.concurrent.CompletableFuture
import java.util.concurrent.TimeUnit

const val WRITE_KEY = "test-write-key"
const val ADMIN_TOKEN = "test-admin-token"

/** How long a starting server may take to print its address. */
const val START_TIMEOUT_S = 30L

fun env(name: String): String =
    System.getenv(name)?.takeIf { File(it).isFile }
        ?: throw IllegalStateException("$name must name a built file (see sdks/kotlin/run-tests.sh)")

fun freePort(): Int = ServerSocket(0).use { it.localPort }

fun tempDir(name: String): File = Files.createTempDirectory("tally-kt-$name-").toFile()

/** `tally serve` in a child process. */
class Server(dataDir: File, port: Int = 0) : AutoCloseable {
    private val process: Process
    val base: String
    private val http = HttpClient.newHttpClient()

    init {
        val pb = ProcessBuilder(
            env("TALLY_BIN"), "serve", "--listen", "127.0.0.1:$port",
            "--data-dir", dataDir.path, "--write-key", WRITE_KEY, "--admin-token", ADMIN_TOKEN,
        )
        pb.environment().keys.removeIf { it.startsWith("TALLY_") }
        pb.redirectOutput(ProcessBuilder.Redirect.DISCARD)
        process = pb.start()
        val found = CompletableFuture<String>()
        Thread {
            process.errorStream.bufferedReader().forEachLine { line ->
                val at = line.indexOf("listening on ")
                if (at >= 0) found.complete(line.substring(at + 13).split(" ")[0])
            }
        }.apply { isDaemon = true }.start()
        base = found.get(START_TIMEOUT_S, TimeUnit.SECONDS)
    }

    fun adminGet(path: String): String {
        val request = HttpRequest.newBuilder(URI.create(base + path))
            .header("authorization", "Bearer $ADMIN_TOKEN")
            .timeout(Duration.ofSeconds(30))
            .build()
        val response = http.send(request, HttpResponse.BodyHandlers.ofString())
        check(response.statusCode() == 200) { "$path answered ${response.statusCode()}: ${response.body()}" }
        return response.body()
    }

    /** A number member of /v1/stats. */
    fun stat(name: String): Long =
        Regex("\"$name\":(\\d+)").find(adminGet("/v1/stats"))!!.groupValues[1].toLong()

    /** Every stored seq of one install, in order. */
    fun installSeqs(installId: String): List<Long> =
        Regex("\"seq\":(\\d+)").findAll(adminGet("/v1/installs/$installId/events?limit=10000"))
            .map { it.groupValues[1].toLong() }.toList()

    /** Every stored message, one JSON object a line, as `GET /v1/export` gives it back. */
    fun exported(): List<String> = adminGet("/v1/export").lines().filter { it.isNotBlank() }

    override fun close() {
        process.destroyForcibly()
        process.waitFor()
    }
}

fun config(endpoint: String, dataDir: File, consent: Consent = Consent.GRANTED) =
    TallyConfig(writeKey = WRITE_KEY, endpoint = endpoint, dataDir = dataDir.path, consent = consent)

fun assertEquals(expected: Any?, actual: Any?, what: String = "") {
    if (expected != actual) throw AssertionError("$what: expected <$expected>, got <$actual>")
}

fun assertTrue(condition: Boolean, what: String) {
    if (!condition) throw AssertionError(what)
}

inline fun <reified E : Throwable> assertThrows(block: () -> Unit): E {
    try {
        block()
    } catch (e: Throwable) {
        if (e is E) return e
        throw AssertionError("expected ${E::class.simpleName}, got $e")
    }
    throw AssertionError("expected ${E::class.simpleName}, nothing was thrown")
}

/** Runs each test, prints one line per test and the closing count. */
fun runTests(tests: List<Pair<String, () -> Unit>>, only: String?): Int {
    var passed = 0
    var failed = 0
    for ((name, test) in tests) {
        if (only != null && !name.contains(only)) continue
        try {
            test()
            passed++
            println("ok   $name")
        } catch (e: Throwable) {
            failed++
            println("FAIL $name")
            e.printStackTrace(System.out)
        }
    }
    println("$passed passed, $failed failed")
    return if (failed == 0) 0 else 1
}
