"""Getting a dump onto disk: a local path, an http(s) URL, or a Special:Export rebuild.

Downloads stream to ``OUT/_downloads/<name>.part`` and resume with an HTTP
``Range`` request after a dropped connection or an interrupted run; the file
is renamed to its final name only when complete (Content-Length matched).
The Special:Export fallback rebuilds the demo dump from a title list when the
configured dump file is absent (e.g. a fresh clone without ``../shared/wiki``).
"""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from hopforge.config import Config
from hopforge.errors import DumpError
from hopforge.storage import content_id

log = logging.getLogger(__name__)

USER_AGENT = "hopforge/0.1 (https://github.com/hopforge; dataset builder)"
CHUNK = 1 << 20
EXPORT_BATCH = 50  # Special:Export serves at most a few dozen full pages per request comfortably


def is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def resolve_dump(cfg: Config, dump: str | None = None) -> Path:
    """A local dump file for ``dump`` (default ``cfg.graph.dump``), downloading or exporting if needed."""
    dump = dump or cfg.graph.dump
    downloads = Path(cfg.run.out) / "_downloads"
    if is_url(dump):
        path = download(dump, downloads)
        # A multistream dump's index sits next to it under a known name; fetch it when it exists.
        if path.name.endswith("-multistream.xml.bz2"):
            idx = dump[: -len(".xml.bz2")] + "-index.txt.bz2"
            try:
                download(idx, downloads)
            except DumpError as e:
                log.warning("no multistream index (%s); ingesting %s sequentially", e, path.name)
        return path
    path = Path(dump)
    if path.exists():
        return path
    if cfg.graph.export_titles is not None:
        titles_file = Path(cfg.graph.export_titles)
        if not titles_file.exists():
            raise DumpError(f"dump {path} not found, and the export title list {titles_file} does not exist either")
        titles = [t.strip() for t in titles_file.read_text(encoding="utf-8").splitlines() if t.strip()]
        log.warning("dump %s not found; rebuilding it from %d titles via %s", path, len(titles), cfg.graph.export_url)
        return export_pages(titles, cfg.graph.export_url, downloads)
    raise DumpError(f"dump not found: {path} (set graph.dump to a file or URL, or graph.export_titles)")


def _request(url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 60.0):
    req = urllib.request.Request(url, data=data, headers={"User-Agent": USER_AGENT, **(headers or {})})
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (http/https checked by is_url)


def download(url: str, dest_dir: Path, *, retries: int = 5, progress: bool = True) -> Path:
    """Stream ``url`` into ``dest_dir`` with resume; returns the completed file."""
    name = Path(urllib.parse.urlparse(url).path).name or "dump.xml"
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / name
    if final.exists():
        return final
    part = dest_dir / f"{name}.part"
    total: int | None = None
    attempt = 0
    bar = None
    try:
        while True:
            have = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with _request(url, headers=headers) as resp:
                    status = resp.status
                    length = resp.headers.get("Content-Length")
                    if status == 206:
                        crange = resp.headers.get("Content-Range", "")
                        total = int(crange.rsplit("/", 1)[-1]) if "/" in crange and not crange.endswith("*") \
                            else (have + int(length) if length else None)
                        mode = "ab"
                    else:  # server ignored Range: start over
                        total = int(length) if length else None
                        have, mode = 0, "wb"
                    if progress and bar is None:
                        from rich.console import Console
                        from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

                        bar = Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(),
                                       console=Console(stderr=True))
                        bar.start()
                        task = bar.add_task(f"download {name}", total=total, completed=have)
                    with open(part, mode) as f:
                        while chunk := resp.read(CHUNK):
                            f.write(chunk)
                            if bar:
                                bar.update(task, completed=f.tell())
            except urllib.error.HTTPError as e:
                if e.code == 416 and have:  # asked for bytes past the end: the part file is complete
                    break
                raise DumpError(f"download {url} failed: HTTP {e.code} {e.reason}") from None
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                attempt += 1
                if attempt > retries:
                    got = part.stat().st_size if part.exists() else 0
                    raise DumpError(f"download {url} failed after {retries} retries at byte {got}: {e}") from None
                log.warning("download %s interrupted at byte %d (%s); resuming", url,
                            part.stat().st_size if part.exists() else 0, e)
                time.sleep(min(2 ** attempt * 0.1, 5))
                continue
            got = part.stat().st_size
            if total is None or got >= total:
                break
            attempt += 1  # connection closed early without an exception
            if attempt > retries:
                raise DumpError(f"download {url} incomplete: {got} of {total} bytes after {retries} retries")
            log.warning("download %s stopped at byte %d of %d; resuming", url, got, total)
    finally:
        if bar:
            bar.stop()
    os.replace(part, final)
    return final


def export_pages(titles: list[str], export_url: str, dest_dir: Path, *, batch: int | None = None) -> Path:
    """Fetch the current revision of ``titles`` through Special:Export into one dump file.

    Each batch is a POST ``pages=<titles, one per line>&curonly=1``; the header
    (``<mediawiki>`` + ``<siteinfo>``) of the first answer is kept and the
    ``<page>`` elements of every answer are concatenated, giving one well-formed export.
    """
    batch = batch or EXPORT_BATCH
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / f"export-{content_id(export_url, titles)}.xml"
    if final.exists():
        return final
    part = final.with_suffix(".xml.part")
    with open(part, "wb") as out:
        for i in range(0, len(titles), batch):
            chunk = titles[i: i + batch]
            body = urllib.parse.urlencode({"pages": "\n".join(chunk), "curonly": "1", "action": "submit"}).encode()
            try:
                with _request(export_url, data=body,
                              headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=300) as resp:
                    xml = resp.read()
            except (urllib.error.URLError, OSError) as e:
                raise DumpError(f"Special:Export {export_url} failed for titles {i}..{i + len(chunk) - 1}: {e}"
                                ) from None
            first, last = xml.find(b"<page>"), xml.rfind(b"</page>")
            if b"<mediawiki" not in xml:
                raise DumpError(f"Special:Export {export_url} answered without a <mediawiki> document "
                                f"for titles {i}..{i + len(chunk) - 1}")
            if i == 0:
                out.write(xml[: first] if first >= 0 else xml[: xml.find(b"</mediawiki>")])
            if first >= 0:
                out.write(xml[first: last + len(b"</page>")] + b"\n")
        out.write(b"</mediawiki>\n")
    os.replace(part, final)
    return final
