"""Record a command on a pseudo-terminal and draw what the terminal shows at a moment, as a PNG.

How examples/screenshots/live_sweep.png was made (a real run of examples/screenshots/demo/train.py on nrun_local):

    cd examples/screenshots/demo && python ../terminal_png.py --cols 100 --rows 40 --at 0.8 ../live_sweep.png -- \\
        python train.py -m hydra/launcher=nrun_local lr=0.05,0.1,1.0 batch_size=64,128 \\
        hydra.launcher.stream=true hydra.launcher.max_parallel=3 hydra.sweep.dir=/tmp/demo_sweep

The command runs under a pty of the given size (so nrun draws its live table, as for a user);
its output is replayed through a small VT100 screen (text, colors, the cursor moves and line
erases rich's live display uses) up to `--at` (a fraction of the run's time), and the screen's
last `--rows` lines are drawn with Pillow in DejaVu Sans Mono.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
import time
from typing import List, Optional, Tuple

Cell = Tuple[str, Tuple[Optional[str], bool, bool]]  # char, (color, bold, dim)
BASIC = ["#45475a", "#f38ba8", "#a6e3a1", "#f9e2af", "#89b4fa", "#f5c2e7", "#94e2d5", "#bac2de",
         "#585b70", "#f38ba8", "#a6e3a1", "#f9e2af", "#89b4fa", "#f5c2e7", "#94e2d5", "#a6adc8"]
BG, FG = "#1e1e2e", "#cdd6f4"
CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


def record(argv: List[str], cols: int, rows: int) -> List[Tuple[float, bytes]]:
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(COLUMNS=str(cols), LINES=str(rows), TERM="xterm-256color")
        os.execvp(argv[0], argv)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    start, chunks = time.monotonic(), []
    while True:
        try:
            if select.select([fd], [], [], 1)[0]:
                data = os.read(fd, 65536)
                if not data:
                    break
                chunks.append((time.monotonic() - start, data))
        except OSError:
            break
    os.waitpid(pid, 0)
    return chunks


class Screen:
    """The VT100 subset rich and a Python app print: text, SGR colors, CR/LF, cursor up, erase line."""

    def __init__(self, cols: int) -> None:
        self.cols, self.lines, self.row, self.col = cols, [[]], 0, 0
        self.style: Tuple[Optional[str], bool, bool] = (None, False, False)

    def feed(self, text: str) -> None:
        pos = 0
        for m in CSI.finditer(text):
            self._text(text[pos:m.start()])
            self._csi(m.group(1), m.group(2))
            pos = m.end()
        self._text(text[pos:])

    def _text(self, text: str) -> None:
        for ch in text:
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self.row += 1
                self.col = 0
                while len(self.lines) <= self.row:
                    self.lines.append([])
            elif ch >= " " and self.col < self.cols:
                line = self.lines[self.row]
                line.extend([(" ", (None, False, False))] * (self.col + 1 - len(line)))
                line[self.col] = (ch, self.style)
                self.col += 1

    def _csi(self, args: str, cmd: str) -> None:
        nums = [int(a) if a.isdigit() else 0 for a in args.split(";")] if args else [0]
        if cmd == "A":
            self.row = max(0, self.row - max(1, nums[0]))
        elif cmd == "K":
            line = self.lines[self.row]
            del line[(0 if nums[0] == 2 else self.col):]
        elif cmd == "G":
            self.col = max(0, nums[0] - 1)
        elif cmd == "m":
            self._sgr(nums)

    def _sgr(self, nums: List[int]) -> None:
        color, bold, dim = self.style
        i = 0
        while i < len(nums):
            n = nums[i]
            if n == 0:
                color, bold, dim = None, False, False
            elif n == 1:
                bold = True
            elif n == 2:
                dim = True
            elif n == 22:
                bold = dim = False
            elif 30 <= n <= 37 or 90 <= n <= 97:
                color = BASIC[n - 30 if n < 90 else n - 82]
            elif n == 39:
                color = None
            elif n == 38 and i + 2 < len(nums) and nums[i + 1] == 5:
                color = BASIC[nums[i + 2]] if nums[i + 2] < 16 else FG
                i += 2
            elif n == 38 and i + 4 < len(nums) and nums[i + 1] == 2:
                color = "#%02x%02x%02x" % tuple(nums[i + 2:i + 5])
                i += 4
            i += 1
        self.style = (color, bold, dim)


def draw(lines: List[List[Cell]], cols: int, path: str, size: int = 15) -> None:
    from PIL import Image, ImageDraw, ImageFont

    regular = ImageFont.truetype("DejaVuSansMono.ttf", size)
    bold = ImageFont.truetype("DejaVuSansMono-Bold.ttf", size)
    cw, lh, pad = regular.getlength("M"), int(size * 1.25), 14
    img = Image.new("RGB", (int(cw * cols) + 2 * pad, lh * len(lines) + 2 * pad + 26), BG)
    d = ImageDraw.Draw(img)
    for i, c in enumerate(("#f38ba8", "#f9e2af", "#a6e3a1")):  # a window's three buttons
        d.ellipse((pad + i * 20, 8, pad + i * 20 + 11, 19), fill=c)
    for y, line in enumerate(lines):
        for x, (ch, (color, is_bold, dim)) in enumerate(line):
            if ch != " ":
                fill = color or FG
                if dim:
                    fill = "#7f849c"
                d.text((pad + x * cw, pad + 26 + y * lh), ch, font=bold if is_bold else regular, fill=fill)
    img.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("png")
    ap.add_argument("--cols", type=int, default=100)
    ap.add_argument("--rows", type=int, default=34)
    ap.add_argument("--at", type=float, default=1.0, help="moment to draw, as a fraction of the run's time")
    ap.add_argument("argv", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    argv = a.argv[1:] if a.argv[:1] == ["--"] else a.argv
    chunks = record(argv, a.cols, a.rows)
    end = chunks[-1][0] if chunks else 0.0
    screen = Screen(a.cols)
    data = b"".join(c for t, c in chunks if t <= end * a.at)
    screen.feed(data.decode(errors="replace"))
    lines = screen.lines[: screen.row + 1]
    while lines and not lines[-1]:
        lines.pop()
    draw(lines[-a.rows:], a.cols, a.png)
    print(f"{a.png}: {len(lines[-a.rows:])} lines at {end * a.at:.1f}s of {end:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
