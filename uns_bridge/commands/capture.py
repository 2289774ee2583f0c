"""The ``record`` and ``replay`` commands and the ``capture`` group (``convert``, ``check``).

Exit codes (all of these commands):

====  ====================================================================================
0     done, input clean
1     failed: a file could not be opened, the broker or database could not be reached, ...
2     usage error (bad option or argument)
3     finished, but N records of the input were bad (each reported with its line / packet)
130   stopped by Ctrl-C / SIGTERM before the end (``record`` stopped this way exits 0: it is
      the normal way to end a recording)
====  ====================================================================================
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.text import Text

from uns_bridge.capture.jsonl import CaptureError, JsonlWriter, Problem, open_capture
from uns_bridge.capture.live import DEFAULT_URL, RecordStats, parse_mqtt_url

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BAD_RECORDS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

console = Console(stderr=True)
T = TypeVar("T")

capture_app = typer.Typer(help="Work with capture files: convert pcaps and compressions, check a capture.")

DIRECTION_HELP = "pcap input: which copies to keep: to-broker (what publishers sent), from-broker, all"


def run_until_signal(factory: Callable[[asyncio.Event], Awaitable[T]]) -> tuple[T, bool]:
    """Run a coroutine with a stop event that Ctrl-C and SIGTERM set; returns (result, stopped)."""

    async def main() -> tuple[T, bool]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await factory(stop), stop.is_set()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(main())


def report_problems(problems: list[Problem], count: int, limit: int = 20) -> None:
    for problem in problems[:limit]:
        console.print(f"[yellow]bad input[/] {problem}", highlight=False, markup=True)
    if count > limit:
        console.print(f"[yellow]... and {count - limit} more bad records[/]")


def _check_url(url: str) -> None:
    try:
        parse_mqtt_url(url)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--url/--to") from None


def _reader_options(path: Path, direction: str, mqtt_version: int) -> dict[str, Any]:
    from uns_bridge.capture.jsonl import is_pcap

    return {"direction": direction, "default_version": mqtt_version} if is_pcap(path) else {}


def record_command(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="capture file to write (.jsonl, .jsonl.gz, .jsonl.zst)")
    ],
    url: Annotated[
        str, typer.Option("--url", envvar="UNS_MQTT_URL", help="broker, mqtt://host:port")
    ] = DEFAULT_URL,
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", "-f", help="topic filter to subscribe (repeatable; default #)"),
    ] = None,
    duration: Annotated[float | None, typer.Option("--duration", min=0, help="stop after S seconds")] = None,
    count: Annotated[int | None, typer.Option("--count", min=1, help="stop after N messages")] = None,
) -> None:
    """Record what the broker carries into a capture file (Ctrl-C stops cleanly)."""
    from uns_bridge.capture.live import record

    filters = filters or ["#"]
    if duration is not None and count is not None:
        raise typer.BadParameter("give --duration or --count, not both")
    _check_url(url)
    started = time.monotonic()

    def line(stats: RecordStats) -> Text:
        elapsed = max(time.monotonic() - started, 1e-9)
        return Text(
            f"recording {url} -> {out}: {stats.messages:,} messages, {stats.bytes:,} bytes, "
            f"{stats.messages / elapsed:,.0f} msg/s"
        )

    try:
        with Live(line(RecordStats()), console=console, refresh_per_second=4, transient=True) as live:
            stats, _ = run_until_signal(
                lambda stop: record(
                    url,
                    out,
                    filters,
                    duration=duration,
                    count=count,
                    stop=stop,
                    on_progress=lambda s: live.update(line(s)),
                    on_subscribed=lambda: live.console.print(f"subscribed to {', '.join(filters)}"),
                )
            )
    except (OSError, ConnectionError) as exc:
        console.print(f"[red]record failed:[/] {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    except Exception as exc:  # aiomqtt.MqttError and friends
        console.print(f"[red]record failed:[/] {type(exc).__name__}: {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    console.print(f"recorded {stats.messages:,} messages to {out}")


def replay_command(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="capture (.jsonl[.gz|.zst], .pcap, .pcapng)")
    ],
    to: Annotated[str | None, typer.Option("--to", help="broker to publish to, mqtt://host:port")] = None,
    direct: Annotated[
        bool, typer.Option("--direct", help="feed the host core and the store, no broker")
    ] = False,
    speed: Annotated[
        float, typer.Option("--speed", min=0.001, help="timing factor (2: twice as fast)")
    ] = 1.0,
    max_speed: Annotated[
        bool, typer.Option("--max-speed", help="as fast as possible, ignore the timing")
    ] = False,
    loop: Annotated[bool, typer.Option("--loop", help="start again at the end, until stopped")] = False,
    shift_time: Annotated[
        bool, typer.Option("--shift-time", help="shift Sparkplug timestamps so data looks live")
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", envvar="UNS_CONFIG", help="configuration (for --direct)")
    ] = None,
    database: Annotated[
        str | None, typer.Option("--database", envvar="UNS_DATABASE_URL", help="PostgreSQL URL (--direct)")
    ] = None,
    direction: Annotated[str, typer.Option("--direction", help=DIRECTION_HELP)] = "to-broker",
    mqtt_version: Annotated[
        int, typer.Option("--mqtt-version", help="pcap input: MQTT version when no CONNECT was captured")
    ] = 4,
) -> None:
    """Replay a capture to a broker (original timing, scaled) or straight into the pipeline (--direct)."""
    if direct == (to is not None):
        raise typer.BadParameter("give exactly one of --to URL or --direct")
    options = _reader_options(file, direction, mqtt_version)
    if direct:
        if loop or shift_time:
            raise typer.BadParameter(
                "--loop and --shift-time are for --to; --direct replays once, as captured"
            )
        from uns_bridge.commands.replay_direct import direct_command

        raise typer.Exit(direct_command(file, config, database, options, console))
    assert to is not None
    _check_url(to)
    from uns_bridge.replay import ReplayStats, count_records, replay_to_broker

    try:
        total = None if loop else count_records(file, **options)
    except CaptureError as exc:
        console.print(f"[red]replay failed:[/] {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    progress = Progress(
        TextColumn("replay {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>10} msg/s"),
        TimeRemainingColumn(),
        console=console,
    )
    started = time.monotonic()

    def update(task: TaskID, stats: ReplayStats) -> None:
        rate = stats.messages / max(time.monotonic() - started, 1e-9)
        done = stats.messages - (stats.passes * total if total and loop else 0)
        progress.update(task, completed=done, rate=f"{rate:,.0f}")

    try:
        with progress:
            task = progress.add_task(file.name, total=total, rate="0")
            stats, stopped = run_until_signal(
                lambda stop: replay_to_broker(
                    file,
                    to,
                    speed=None if max_speed else speed,
                    loop=loop,
                    shift_time=shift_time,
                    stop=stop,
                    on_progress=lambda s: update(task, s),
                    reader_options=options,
                )
            )
    except CaptureError as exc:
        console.print(f"[red]replay failed:[/] {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    except Exception as exc:  # broker unreachable, connection lost
        console.print(f"[red]replay failed:[/] {type(exc).__name__}: {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    console.print(
        f"replayed {stats.messages:,} messages in {stats.passes} pass(es) to {to}"
        + (f"; {stats.unshifted} payloads not shifted (undecodable)" if stats.unshifted else "")
    )
    report_problems(stats.problems, stats.problem_count)
    if stats.problem_count:
        raise typer.Exit(EXIT_BAD_RECORDS)
    if stopped:
        raise typer.Exit(EXIT_INTERRUPTED)


@capture_app.command("convert")
def convert_command(
    source: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="capture or pcap to read")],
    target: Annotated[
        Path, typer.Argument(dir_okay=False, help="JSON Lines capture to write (.jsonl/.gz/.zst)")
    ],
    direction: Annotated[str, typer.Option("--direction", help=DIRECTION_HELP)] = "to-broker",
    mqtt_version: Annotated[
        int, typer.Option("--mqtt-version", help="pcap input: MQTT version when no CONNECT was captured")
    ] = 4,
) -> None:
    """Convert a pcap/pcapng or a capture into a JSON Lines capture (compression by file name)."""
    if source.resolve() == target.resolve():
        raise typer.BadParameter("source and target are the same file")
    try:
        reader = open_capture(source, **_reader_options(source, direction, mqtt_version))
        with JsonlWriter(target) as writer:
            for record in reader:
                writer.write(record)
    except CaptureError as exc:
        console.print(f"[red]convert failed:[/] {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    console.print(f"wrote {writer.count:,} messages to {target}")
    report_problems(reader.problems.kept, reader.problems.count)
    if reader.problems.count:
        raise typer.Exit(EXIT_BAD_RECORDS)


@capture_app.command("check")
def check_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="capture or pcap to check")],
    decode: Annotated[
        bool, typer.Option("--decode/--no-decode", help="also decode every Sparkplug payload")
    ] = True,
    direction: Annotated[str, typer.Option("--direction", help=DIRECTION_HELP)] = "to-broker",
    mqtt_version: Annotated[
        int, typer.Option("--mqtt-version", help="pcap input: MQTT version when no CONNECT was captured")
    ] = 4,
) -> None:
    """Read a capture end to end: counts per Sparkplug message type, time span, every bad record."""
    decoder: Callable[[bytes], object] | None = None
    decode_errors: type[Exception] = ValueError
    if decode:
        try:
            from uns_bridge.sparkplug.payload import PayloadError, decode_payload

            decoder, decode_errors = decode_payload, PayloadError
        except ImportError:
            console.print("[yellow]the Sparkplug codec is not available; payloads not decoded[/]")
    kinds: Counter[str] = Counter()
    undecodable: list[Problem] = []
    first = last = None
    total = 0
    try:
        reader = open_capture(file, **_reader_options(file, direction, mqtt_version))
        for record in reader:
            total += 1
            first = record.t if first is None else min(first, record.t)
            last = record.t if last is None else max(last, record.t)
            parts = record.topic.split("/")
            kind = (
                parts[2]
                if parts[0] == "spBv1.0" and len(parts) >= 4
                else ("STATE" if "STATE" in parts[:2] else "other")
            )
            kinds[kind] += 1
            if decoder is not None and kind not in ("STATE", "other"):
                try:
                    decoder(record.payload)
                except decode_errors as exc:
                    undecodable.append(
                        Problem(f"message {total} ({record.topic})", f"payload does not decode: {exc}")
                    )
    except CaptureError as exc:
        console.print(f"[red]check failed:[/] {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    span = f"{last - first:,.3f} s" if first is not None and last is not None else "-"
    typer.echo(f"{file}: {total:,} messages over {span}")
    for kind, n in sorted(kinds.items()):
        typer.echo(f"  {kind:<8} {n:,}")
    bad = reader.problems.count + len(undecodable)
    typer.echo(f"  bad records: {reader.problems.count:,}; undecodable payloads: {len(undecodable):,}")
    report_problems(reader.problems.kept + undecodable, bad)
    if bad:
        raise typer.Exit(EXIT_BAD_RECORDS)


def register(app: typer.Typer) -> None:
    """Add ``record``, ``replay`` and the ``capture`` group to the root app."""
    app.command("record")(record_command)
    app.command("replay")(replay_command)
    app.add_typer(capture_app, name="capture")
