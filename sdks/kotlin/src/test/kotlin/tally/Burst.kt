// The child JVM of the SIGKILL test: tracks without end, flushing every
// 100 events and printing the last flushed seq, until it is killed.
package tally

import java.io.File

fun main(args: Array<String>) {
    val tracker = TallyTracker(config(args[0], File(args[1])))
    var i = 0L
    while (true) {
        i++
        val seq = tracker.track("Burst", mapOf("i" to PropValue.Int(i)))
        if (i % 100 == 0L) {
            tracker.flush()
            println(seq)
            System.out.flush()
        }
    }
}
