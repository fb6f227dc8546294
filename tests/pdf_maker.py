"""Small PDFs written byte by byte, with text and figures at known positions (PDF points)."""

from __future__ import annotations

from collections.abc import Sequence

Line = tuple[float, float, str]  # x, y (baseline), text in Helvetica 12
Figure = tuple[float, float, float, float]  # left, bottom, width, height of a 100 x 80 px image


def _escape(text: str) -> bytes:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1")


def make_pdf(
    pages: Sequence[tuple[Sequence[Line], Sequence[Figure]]], size: tuple[float, float] = (300, 400)
) -> bytes:
    """A PDF whose pages hold ``(lines, figures)``: Helvetica 12 lines at their baselines and
    figures (a 100 x 80 px two-colour image) scaled into their boxes."""
    objs: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")  # 3
    pixels = b"".join(
        (b"\xd0\x30\x30" if (x // 10 + y // 10) % 2 else b"\x20\x60\xc0")
        for y in range(80)
        for x in range(100)
    )
    objs.append(
        b"<< /Type /XObject /Subtype /Image /Width 100 /Height 80 /ColorSpace /DeviceRGB "
        b"/BitsPerComponent 8 /Length %d >>\nstream\n" % len(pixels) + pixels + b"\nendstream"
    )  # 4
    kids = []
    for lines, figures in pages:
        ops = [b"BT /F1 12 Tf 1 0 0 1 %.2f %.2f Tm (%s) Tj ET" % (x, y, _escape(t)) for x, y, t in lines]
        ops += [b"q %.2f 0 0 %.2f %.2f %.2f cm /Im1 Do Q" % (w, h, x, y) for x, y, w, h in figures]
        content = b"\n".join(ops)
        objs.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
        contents = len(objs)
        objs.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R >> /XObject << /Im1 4 0 R >> >> >>"
            % (size[0], size[1], contents)
        )
        kids.append(b"%d 0 R" % len(objs))
    objs[1] = b"<< /Type /Pages /Kids [" + b" ".join(kids) + b"] /Count %d >>" % len(kids)
    out, offsets = b"%PDF-1.4\n", []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
