"""CSV files as people hand them over: written by headstart, or opened and saved again in
a spreadsheet (a UTF-8 byte-order mark, CRLF line ends, ';' or tab separators)."""

from __future__ import annotations

import csv
import io


def decoded(raw: bytes) -> str:
    """UTF-8 text of a CSV file, a leading byte-order mark dropped (utf-8-sig).

    Raises UnicodeDecodeError for anything else.
    """
    return raw.decode("utf-8-sig")


def table(text: str) -> list[list[str]]:
    """The rows of CSV text, separated by ',', ';' or tab (csv.Sniffer on the first 4 KB;
    ',' when it cannot tell), LF or CRLF line ends; rows with no non-blank cell are dropped.

    Raises csv.Error for text the csv module cannot parse (a NUL character, ...).
    """
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    return [row for row in csv.reader(io.StringIO(text, newline=""), dialect)
            if any(cell.strip() for cell in row)]
