"""Documents to chunks, by format: text, Markdown (by headings), HTML, PDF.

Every chunk keeps where it came from — its position in the document (0, 1, ...), the
character offsets in the document's extracted text, the Markdown heading path or the PDF
page — so that an answer built from it can cite it. Sizes are in characters: chunks are at
most ``size`` long and consecutive chunks of one section share ``overlap`` characters, cut
at a paragraph, sentence or word boundary when there is one in the last fifth.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from libs.common.errors import InvalidArgument

Format = Literal["text", "markdown", "html", "pdf"]
FORMATS: tuple[Format, ...] = ("text", "markdown", "html", "pdf")

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)
_BREAKS = ("\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ")


class DocumentError(InvalidArgument):
    """A document that cannot be read as its format (names the file)."""


@dataclass(frozen=True)
class ChunkOptions:
    size: int = 800
    overlap: int = 100

    def __post_init__(self) -> None:
        if self.size < 50:
            raise InvalidArgument("chunk size must be at least 50 characters")
        if not 0 <= self.overlap < self.size // 2:
            raise InvalidArgument("chunk overlap must be between 0 and half the chunk size")


@dataclass
class Chunk:
    text: str
    position: int
    start: int  # character offsets in the document's extracted text
    end: int
    page: int | None = None
    heading: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def location(self) -> dict[str, Any]:
        where: dict[str, Any] = {"position": self.position, "start": self.start, "end": self.end}
        if self.page is not None:
            where["page"] = self.page
        if self.heading:
            where["heading"] = self.heading
        return where


def detect_format(filename: str, content_type: str = "") -> Format:
    """The format of a document from its content type, else its file name's extension."""
    content_type = content_type.split(";")[0].strip().lower()
    by_type: dict[str, Format] = {
        "application/pdf": "pdf",
        "text/html": "html",
        "application/xhtml+xml": "html",
        "text/markdown": "markdown",
        "text/x-markdown": "markdown",
    }
    if content_type in by_type:
        return by_type[content_type]
    name = filename.lower()
    for suffix, fmt in (
        (".pdf", "pdf"),
        (".html", "html"),
        (".htm", "html"),
        (".md", "markdown"),
        (".markdown", "markdown"),
    ):
        if name.endswith(suffix):
            return fmt  # type: ignore[return-value]
    return "text"


def _cut(text: str, start: int, size: int) -> int:
    """Where a chunk starting at start ends: at a boundary in its last fifth, if any."""
    end = start + size
    if end >= len(text):
        return len(text)
    floor = start + size * 4 // 5
    for mark in _BREAKS:
        at = text.rfind(mark, floor, end)
        if at != -1:
            return at + len(mark)
    return end


def _split(text: str, base: int, options: ChunkOptions) -> list[tuple[int, int]]:
    """(start, end) offsets (plus base) of the chunks of one section."""
    spans: list[tuple[int, int]] = []
    start = 0
    while start < len(text):
        while start < len(text) and text[start].isspace():
            start += 1
        if start >= len(text):
            break
        end = _cut(text, start, options.size)
        if text[start:end].strip():
            spans.append((base + start, base + end))
        if end >= len(text):
            break
        start = max(end - options.overlap, start + 1)
        # Start the overlap at a word, not inside one.
        space = text.find(" ", start, end)
        if options.overlap and space != -1:
            start = space + 1
    return spans


def _sections_markdown(text: str) -> list[tuple[str, int, int]]:
    """(heading path, start, end) of each section; headings inside code fences are text."""
    fenced: list[tuple[int, int]] = []
    marks = [m.start() for m in _FENCE.finditer(text)]
    for opening, closing in zip(marks[::2], marks[1::2], strict=False):
        fenced.append((opening, closing))
    headings = [m for m in _HEADING.finditer(text) if not any(a < m.start() < b for a, b in fenced)]
    sections: list[tuple[str, int, int]] = []
    path: list[tuple[int, str]] = []
    if not headings or headings[0].start() > 0:
        sections.append(("", 0, headings[0].start() if headings else len(text)))
    for index, match in enumerate(headings):
        level = len(match.group(1))
        path = [(lvl, title) for lvl, title in path if lvl < level] + [
            (level, match.group(2).strip())
        ]
        end = headings[index + 1].start() if index + 1 < len(headings) else len(text)
        sections.append((" > ".join(title for _, title in path), match.start(), end))
    return sections


def _html_text(data: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    text = "\n".join(line for line in lines if line)
    return re.sub(r"\n{3,}", "\n\n", text)


def _pdf_pages(filename: str, data: bytes) -> list[str]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as error:
        raise DocumentError(
            f"{filename}: not a readable PDF ({type(error).__name__}: {error})",
            [{"path": filename, "message": "not a readable PDF"}],
        ) from error
    if not any(page.strip() for page in pages):
        raise DocumentError(
            f"{filename}: the PDF has no extractable text (a scanned PDF needs OCR first)",
            [{"path": filename, "message": "no text"}],
        )
    return pages


def _decode(filename: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DocumentError(
            f"{filename}: not UTF-8 text (byte {error.start})",
            [{"path": filename, "message": "not UTF-8"}],
        ) from error


def chunk_document(
    filename: str,
    data: bytes | str,
    fmt: Format | None = None,
    options: ChunkOptions | None = None,
    content_type: str = "",
) -> list[Chunk]:
    """The chunks of one document; raises DocumentError (naming the file) if unreadable."""
    options = options or ChunkOptions()
    fmt = fmt or detect_format(filename, content_type)
    if fmt not in FORMATS:
        raise InvalidArgument(f"{filename}: unknown format {fmt!r}; known: {list(FORMATS)}")
    # Each part: (text, offset in the whole extracted text, page, heading).
    parts: list[tuple[str, int, int | None, str]] = []
    if fmt == "pdf":
        raw = data if isinstance(data, bytes) else data.encode()
        offset = 0
        for number, page_text in enumerate(_pdf_pages(filename, raw), start=1):
            parts.append((page_text, offset, number, ""))
            offset += len(page_text) + 1
    else:
        text = data if isinstance(data, str) else _decode(filename, data)
        if fmt == "html":
            parts.append((_html_text(text), 0, None, ""))
        elif fmt == "markdown":
            for heading, start, end in _sections_markdown(text):
                parts.append((text[start:end], start, None, heading))
        else:
            parts.append((text, 0, None, ""))
    chunks: list[Chunk] = []
    for part, base, page, heading in parts:
        for start, end in _split(part, base, options):
            chunks.append(
                Chunk(
                    text=part[start - base : end - base].strip(),
                    position=len(chunks),
                    start=start,
                    end=end,
                    page=page,
                    heading=heading,
                )
            )
    return chunks
