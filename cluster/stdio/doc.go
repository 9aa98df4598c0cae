// Package stdio owns the attached stdio relay of `ssi run`: the home
// node's session (Sessions, Session) and the running node's holder
// (Holder), the protocol between them, and the pipes a holder holds
// (Pipes). It knows nothing of the agent, Raft, CRIU or jobs: it does
// not import ssi/cluster, raftstore or migrate's CRIU client. What it
// needs from its node comes in as functions: how to reach a session
// (Dialer), whether the agreed state still lists a process (the listed
// function of NewSessions), and the process's pid.
//
// The caller of `ssi run` talks to its own agent (the process's home): a
// session there relays frames between the caller and a holder, which
// lives on the node where the process runs and holds our ends of the
// process's stdin, stdout and stderr pipes. When the process moves, the
// old holder detaches (what it holds travels in a State) and a new
// holder on the destination attaches; the caller never notices.
//
// The stream between a holder and the session (the migration port,
// wire.StreamHeader kind wire.KindStdio) may be refused, break or be
// replaced at any moment: a move closes it, and the next holder may
// reach the session before or after the session sees the old stream
// end. Nothing is lost or repeated because both directions are counted
// from the start of the process, over every holder it has had:
//
//   - The holder speaks first (wire.FrHeader, helloMsg): its epoch, one
//     more per move, so that a late stream of a holder that has left is
//     refused; the stdin bytes and signals it has received; whether it
//     has the EOF. Nothing flows before both hellos, so a stream that its
//     holder drops at once (a detach began while it dialled) takes
//     nothing with it.
//   - The session answers (wire.FrHeader, helloMsg) with where stdin
//     resumes and how much output it has passed to the caller, or closes
//     the stream: it has no such process, or it has seen a newer holder.
//   - Then the session sends stdin, signals and the EOF from the holder's
//     counts on, and the holder sends output from the session's count
//     on. Each stdin and output frame says the offset of its first byte
//     (wire.WithAt) and the far side keeps only what it lacks, so a
//     resend, or an old stream read late, never shifts the count.
//   - Each side acknowledges what it has (wire.FrAck, ackMsg): the holder
//     the stdin it wrote to the process and the signals it got, the
//     session the output it passed on. Each keeps what is not
//     acknowledged and sends it again on the next stream.
//   - What each side keeps is bounded. The caller sends stdin only
//     within the credit its session grants (wire.FrCredit): maxIn past
//     what the holders have acknowledged writing, so the session keeps
//     at most that much and never stops reading its caller, and a
//     signal never waits behind stdin. A caller that sends past its
//     credit is cut off (wire.FrError) and its stream closed. A holder
//     keeps at most maxIn of stdin too (a stream that sends more is
//     ended, and the next resumes from the holder's count); with no
//     room for output (maxOut) it stops reading the process's output,
//     as a terminal would, and the process blocks on its writes. The
//     session keeps no output: it passes each frame on to its caller
//     before reading the next, and the holder sends at most outWindow
//     past what the session acknowledged.
//   - wire.FrAck is also the keepalive: a stream that hears nothing for
//     Timing.idle is dead, and every write has that deadline.
//   - A process with a terminal of its own (ssi run -t) has a fourth
//     pipe, for its window size: the caller sends wire.FrWinsize when its
//     terminal's size changes, the session keeps the latest and sends it
//     once to every holder stream (so a new holder gets it even if a
//     move lost it), the holder writes it to the pipe and the process's
//     init sets it on the pty. Its stdin and stdout are the pty's, so
//     ^C is a byte like any other; a caller that hangs up sends the
//     process SIGHUP.
//   - The holder ends with wire.FrExit after the last output; the session
//     passes it on and answers wire.FrExit: the holder may go.
package stdio
