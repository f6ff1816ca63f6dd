"""Event-camera file formats: readers and writers, NumPy only (``lz4`` optional, for AEDAT 4).

Every reader takes a path (str / PathLike) or the file's bytes and returns ``(events, sensor_size)``:
``events`` is a structured array of ``events.EVENT_DTYPE`` (x, y, t in µs, p with 1 = ON) sorted by
t, and ``sensor_size = (W, H, P)``. A truncated file, a wrong magic/header, an event outside the
sensor, a negative timestamp or one that goes backwards raises
``ValueError("<file>: <what> at byte offset <n>")``; a reader never returns fewer events than the
file holds without saying so. Decoding is vectorised: ``np.frombuffer`` with explicit-endian dtypes
and bit operations. Writers take ``(path, events, ...)``, check that the events fit the format
(``ValueError`` naming the field otherwise) and write atomically (temp file + rename).
"""
import io
import os
import re
import struct
import tempfile

import numpy as np

from .events import EVENT_DTYPE, check_sensor_size, slice_time, validate

NMNIST_SIZE = (34, 34, 2)        # N-MNIST: 28x28 digits on a 34x34 ATIS crop
NCALTECH_SIZE = (240, 180, 2)    # N-Caltech101's ATIS crop (the size tonic uses)
DVS128_SIZE = (128, 128, 2)      # DVS128: CIFAR10-DVS, DVS128 Gesture
NCARS_SIZE = (120, 100, 2)       # N-Cars samples
GEN1_SIZE = (304, 240, 2)        # Prophesee Gen1 ATIS (automotive dataset)


# --------------------------------------------------------------------------- shared helpers
def _load(src):
    """``(data, name)`` for a path or a bytes-like object; ``name`` is used in error messages."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), "<bytes>"
    if not isinstance(src, (str, os.PathLike)):
        raise TypeError(f"expected a file path or bytes, got {type(src).__name__}")
    with open(src, "rb") as f:
        return f.read(), os.fspath(src)


def _err(name, offset, what):
    return ValueError(f"{name}: {what} at byte offset {int(offset)}")


def _write(path, chunks):
    """Write the byte strings ``chunks`` to ``path`` atomically (temp file in the same folder + rename)."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _events(x, y, t, p):
    ev = np.empty(len(t), EVENT_DTYPE)
    ev["x"], ev["y"], ev["t"], ev["p"] = x, y, t, p
    return ev


def _check(name, offset_of, x, y, t, p, size):
    """Raise at the first event outside ``size``, with p > 1, or whose t is negative or goes backwards.

    ``offset_of(i)`` gives the byte offset of event ``i`` (only called on error)."""
    if len(t) == 0:
        return
    w, h = size[0], size[1]
    if x.max() >= w or y.max() >= h or p.max() > 1:
        i = int(np.argmax((x >= w) | (y >= h) | (p > 1)))
        raise _err(name, offset_of(i), f"event {i} (x={x[i]}, y={y[i]}, p={p[i]}) outside sensor {tuple(size)}")
    d = np.diff(t)
    if t[0] < 0 or (d.size and d.min() < 0):
        i = 0 if t[0] < 0 else int(np.argmax(d < 0)) + 1
        raise _err(name, offset_of(i), f"event {i} timestamp {t[i]} is negative or earlier than the previous one")


def _prepare(events, who, w, h, tmax):
    """Validate ``events`` for a writer: sorted, 0 <= x < w, 0 <= y < h, p in {0, 1}, 0 <= t <= tmax."""
    validate(events, name=f"{who}: events")
    if events.size:
        for f, hi in (("x", w - 1), ("y", h - 1), ("p", 1), ("t", tmax)):
            c = events[f]
            if c.min() < 0 or c.max() > hi:
                raise ValueError(f"{who}: events['{f}'] must lie in [0, {hi}], got [{c.min()}, {c.max()}]")
    return events


def _header_end(buf, prefix, name):
    """Offset just past the leading lines of ``buf`` that start with ``prefix`` (each ends with ``\\n``)."""
    pos = 0
    while buf.startswith(prefix, pos):
        nl = buf.find(b"\n", pos)
        if nl < 0:
            raise _err(name, pos, "unterminated header line")
        pos = nl + 1
    return pos


def _records(buf, pos, dtype, name):
    """View ``buf[pos:]`` as records of ``dtype``; raise if the last record is cut short."""
    rem = (len(buf) - pos) % dtype.itemsize
    if rem:
        raise _err(name, len(buf) - rem, f"truncated record ({rem} of {dtype.itemsize} bytes)")
    return np.frombuffer(buf, dtype, offset=pos)


# --------------------------------------------------------------------------- N-MNIST / N-Caltech101
# x = byte 0, y = byte 1, w = bytes 1..4 read as a big-endian uint32 (y, then the 24-bit p|t word)
_NMNIST = np.dtype({"names": ["x", "y", "w"], "formats": ["u1", "u1", ">u4"], "offsets": [0, 1, 1], "itemsize": 5})


def read_nmnist(src, sensor_size=None):
    """Read an N-MNIST / N-Caltech101 ``.bin`` file.

    Layout: no header; 5 bytes per event: byte 0 = x, byte 1 = y, bytes 2..4 a big-endian 24-bit word
    whose bit 23 is the polarity (1 = ON) and bits 22..0 the timestamp in µs. A record with y == 240 is
    a timestamp-overflow marker: 2**13 µs is added to every later timestamp and the record is dropped
    (the convention of the datasets' own Matlab reader).
    ``sensor_size``: used (and enforced) when given; otherwise (34, 34, 2) when every event fits
    (N-MNIST), else (240, 180, 2) (N-Caltech101); an event outside that raises ``ValueError``.
    """
    buf, name = _load(src)
    r = _records(buf, 0, _NMNIST, name)
    x, y, w = r["x"], r["y"], r["w"]
    t = (w & 0x7FFFFF).astype(np.int64)
    p = ((w >> 23) & 1).astype(np.uint8)
    marker = y == 240
    rec = None                      # record index of each kept event, when markers were dropped
    if marker.any():
        t += np.cumsum(marker) << 13
        rec = np.flatnonzero(~marker)
        x, y, t, p = x[rec], y[rec], t[rec], p[rec]
    if sensor_size is None:
        fits = len(t) == 0 or (x.max() < NMNIST_SIZE[0] and y.max() < NMNIST_SIZE[1])
        sensor_size = NMNIST_SIZE if fits else NCALTECH_SIZE
    size = check_sensor_size(sensor_size)
    _check(name, lambda i: 5 * (i if rec is None else rec[i]), x, y, t, p, size)
    return _events(x, y, t, p), size


def write_nmnist(path, events):
    """Write ``events`` as an N-MNIST ``.bin`` (layout in ``read_nmnist``): x < 256, y < 240, t >= 0.

    Timestamps that do not fit in 23 bits are written after enough overflow markers (y == 240, each
    worth 2**13 µs) that ``read_nmnist`` gives the same events back; every 2**13 µs past 2**23 µs costs
    one 5-byte marker (t is limited to < 2**32 µs, at most 2**19 markers).
    """
    ev = _prepare(events, "write_nmnist", 256, 240, 2**32 - 1)
    t = ev["t"].astype(np.int64)
    k = np.maximum(0, -(-(t - 0x7FFFFF) >> 13))     # markers needed before each event: ceil((t - (2^23-1)) / 2^13)
    raw = t - (k << 13)
    rows = np.zeros((len(t) + (int(k[-1]) if len(t) else 0), 5), np.uint8)
    rows[:, 1] = 240                                 # every row is a marker ...
    at = np.arange(len(t)) + k                       # ... except those holding the events
    word = (ev["p"].astype(np.int64) << 23) | raw
    rows[at, 0], rows[at, 1] = ev["x"], ev["y"]
    rows[at, 2], rows[at, 3], rows[at, 4] = word >> 16, (word >> 8) & 255, word & 255
    _write(path, [rows.tobytes()])


# --------------------------------------------------------------------------- AEDAT 2.0 (jAER DVS128)
_CONVENTIONS = {   # (x_raw, y_raw, p_raw) -> (x, y, p); each map is its own inverse, so writers reuse it
    "raw": lambda x, y, p: (x, y, p),
    "jaer": lambda x, y, p: (127 - x, y, 1 - p),
    "cifar10dvs": lambda x, y, p: (127 - y, 127 - x, 1 - p),
}
_AEDAT2 = np.dtype([("a", ">u4"), ("t", ">i4")])


def _convention(convention):
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention must be one of {sorted(_CONVENTIONS)}, got {convention!r}")
    return _CONVENTIONS[convention]


def read_aedat2(src, convention="raw"):
    """Read a jAER AEDAT 2.0 file from a DVS128 (the original CIFAR10-DVS format).

    Layout: ASCII header lines, each starting with '#', the first being '#!AER-DAT2.0'; then 8-byte
    big-endian records: int32 address, int32 timestamp (µs). DVS128 address bits: 14..8 = y_raw,
    7..1 = x_raw, bit 0 = p_raw; an address with any other bit set (e.g. jAER's bit-15 external-event
    flag) raises ``ValueError``. Timestamps must be >= 0 and non-decreasing (no wrap handling).
    ``convention`` maps the raw fields to the returned ones:

    - ``"raw"``: x = x_raw, y = y_raw, p = p_raw (the bits as stored);
    - ``"jaer"``: x = 127 - x_raw, y = y_raw, p = 1 - p_raw (jAER stores x mirrored and ON as 0);
    - ``"cifar10dvs"``: x = 127 - y_raw, y = 127 - x_raw, p = 1 - p_raw (what common CIFAR10-DVS
      readers, e.g. spikingjelly's, return).

    The sensor size is always (128, 128, 2).
    """
    conv = _convention(convention)
    buf, name = _load(src)
    if not buf.startswith(b"#!AER-DAT2.0"):
        raise _err(name, 0, "missing '#!AER-DAT2.0' magic")
    pos = _header_end(buf, b"#", name)
    r = _records(buf, pos, _AEDAT2, name)
    a, t = r["a"], r["t"].astype(np.int64)
    if a.size and a.max() > 0x7FFF:
        i = int(np.argmax(a > 0x7FFF))
        raise _err(name, pos + 8 * i, f"address {a[i]:#x} has bits outside the DVS128 layout")
    x, y, p = conv((a >> 1) & 0x7F, (a >> 8) & 0x7F, a & 1)
    _check(name, lambda i: pos + 8 * i, x, y, t, p, DVS128_SIZE)
    return _events(x, y, t, p), DVS128_SIZE


def write_aedat2(path, events, convention="raw"):
    """Write DVS128 ``events`` (x, y < 128, 0 <= t < 2**31) as AEDAT 2.0; see ``read_aedat2``."""
    conv = _convention(convention)
    ev = _prepare(events, "write_aedat2", 128, 128, 2**31 - 1)
    x, y, p = conv(*(ev[f].astype(np.uint32) for f in "xyp"))
    r = np.empty(len(ev), _AEDAT2)
    r["a"], r["t"] = (y << 8) | (x << 1) | p, ev["t"]
    head = (b"#!AER-DAT2.0\r\n# This is a raw AE data file created by minisnn\r\n"
            b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event\r\n"
            b"# Timestamps tick is 1 us\r\n")
    _write(path, [head, r.tobytes()])


# --------------------------------------------------------------------------- AEDAT 3.1 (DVS128 Gesture)
_PACKET = struct.Struct("<hhiiiiii")   # type, source, size, tsOffset, tsOverflow, capacity, number, valid
_POLARITY = np.dtype([("d", "<u4"), ("t", "<i4")])
_END31 = b"#!END-HEADER\r\n"


def _aedat31_packets(buf, pos, name):
    """Yield ``(records, byte offsets, tsOverflow)`` of the valid events of every polarity packet."""
    while pos < len(buf):
        if pos + _PACKET.size > len(buf):
            raise _err(name, pos, "truncated packet header")
        typ, _, size, ts_off, ovf, cap, num, _ = _PACKET.unpack_from(buf, pos)
        if size <= 0 or not 0 <= num <= cap or ovf < 0:
            raise _err(name, pos, f"bad packet header (eventSize={size}, capacity={cap}, number={num})")
        data, pos = pos + _PACKET.size, pos + _PACKET.size + cap * size
        if pos > len(buf):
            raise _err(name, data, f"truncated packet ({cap * size} bytes announced, {len(buf) - data} present)")
        if typ != 1:                    # not polarity events: special, frame, IMU ... packets
            continue
        if size != 8 or ts_off != 4:
            raise _err(name, data - _PACKET.size, f"polarity packet with eventSize {size}, tsOffset {ts_off}")
        r = np.frombuffer(buf, _POLARITY, num, data)
        ok = np.flatnonzero(r["d"] & 1)     # bit 0 = valid
        yield r[ok], data + 8 * ok, ovf


def read_aedat31(src, sensor_size=DVS128_SIZE):
    """Read an AEDAT 3.1 file (DVS128 Gesture) and return its valid polarity events.

    Layout: ASCII header lines from '#!AER-DAT3.1' to '#!END-HEADER\\r\\n'; then packets, each a 28-byte
    little-endian header (int16 eventType, int16 eventSource, int32 eventSize, int32 eventTSOffset,
    int32 eventTSOverflow, int32 eventCapacity, int32 eventNumber, int32 eventValid) followed by
    eventCapacity * eventSize bytes of which the first eventNumber events are used. Packets of other
    types than 1 (polarity) are skipped. Polarity event, 8 bytes: uint32 data (bit 0 = valid,
    bit 1 = polarity, bits 2..16 = y, bits 17..31 = x), int32 timestamp; invalid events are skipped;
    the time is (eventTSOverflow << 31) | timestamp. ``sensor_size`` defaults to DVS128's and is enforced.
    """
    buf, name = _load(src)
    if not buf.startswith(b"#!AER-DAT3.1"):
        raise _err(name, 0, "missing '#!AER-DAT3.1' magic")
    end = buf.find(_END31)
    if end < 0:
        raise _err(name, len(buf), "header has no '#!END-HEADER' line")
    parts = list(_aedat31_packets(buf, end + len(_END31), name))
    d = np.concatenate([r["d"] for r, _, _ in parts] + [np.zeros(0, np.uint32)])
    t = np.concatenate([(np.int64(o) << 31) | r["t"] for r, _, o in parts] + [np.zeros(0, np.int64)])
    offs = np.concatenate([o for _, o, _ in parts] + [np.zeros(0, np.int64)])
    x, y, p = d >> 17, (d >> 2) & 0x7FFF, ((d >> 1) & 1).astype(np.uint8)
    size = check_sensor_size(sensor_size)
    _check(name, lambda i: offs[i], x, y, t, p, size)
    return _events(x, y, t, p), size


def write_aedat31(path, events, sensor_size=DVS128_SIZE, packet_size=4096):
    """Write ``events`` as AEDAT 3.1 polarity packets of at most ``packet_size`` events (see ``read_aedat31``).

    A new packet starts whenever t >> 31 (the packet's eventTSOverflow) changes; requires t < 2**62."""
    w, h, _ = check_sensor_size(sensor_size)
    if w > 2**15 or h > 2**15 or int(packet_size) < 1:
        raise ValueError("write_aedat31: sensor_size must be <= 32768 per side and packet_size >= 1")
    ev = _prepare(events, "write_aedat31", w, h, 2**62 - 1)
    t = ev["t"].astype(np.int64)
    r = np.empty(len(ev), _POLARITY)
    r["d"] = 1 | (ev["p"].astype(np.uint32) << 1) | (ev["y"].astype(np.uint32) << 2) | (ev["x"].astype(np.uint32) << 17)
    r["t"] = t & 0x7FFFFFFF
    cuts = np.flatnonzero(np.diff(t >> 31)) + 1
    bounds = np.unique(np.concatenate([np.arange(0, len(t), int(packet_size)), cuts, [len(t)]]))
    chunks = [b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: minisnn\r\n", _END31]
    for a, b in zip(bounds[:-1], bounds[1:]):
        n = int(b - a)
        chunks += [_PACKET.pack(1, 1, 8, 4, int(t[a] >> 31), n, n, n), r[a:b].tobytes()]
    _write(path, chunks)


def read_gesture_labels(csv_path):
    """Read a DVS128 Gesture ``userXX_<lighting>_labels.csv``.

    Layout: a header line ``class,startTime_usec,endTime_usec``, then one ``class,start,end`` line per
    gesture with class in 1..11. Returns an int64 array of shape (n, 3) with columns
    (label, start_us, end_us) where **label = class - 1 is 0-based (0..10)**.
    """
    buf, name = _load(csv_path)
    rows, off = [], 0
    for i, line in enumerate(buf.decode("latin-1").splitlines(keepends=True)):
        s = line.strip().replace(" ", "")
        if i == 0 and s != "class,startTime_usec,endTime_usec":
            raise _err(name, 0, "expected the header 'class,startTime_usec,endTime_usec'")
        if i > 0 and s:
            try:
                c, a, b = (int(v) for v in s.split(","))
            except ValueError:
                raise _err(name, off, f"bad label line {s!r}") from None
            if not (1 <= c <= 11 and 0 <= a < b):
                raise _err(name, off, f"label line {s!r} needs class in 1..11 and 0 <= start < end")
            rows.append((c - 1, a, b))
        off += len(line)
    if off == 0:
        raise _err(name, 0, "empty label file")
    return np.array(rows, np.int64).reshape(-1, 3)


def slice_gesture(events, labels):
    """Cut a recording into gestures: list of ``(events with start <= t < end, label)``, where ``labels``
    is ``read_gesture_labels``' (n, 3) array and the labels are 0-based (CSV class - 1)."""
    validate(events)
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != 3:
        raise ValueError(f"slice_gesture: labels must have shape (n, 3), got {labels.shape}")
    return [(slice_time(events, a, b), int(c)) for c, a, b in labels]


# --------------------------------------------------------------------------- Prophesee DAT (N-Cars, Gen1)
_DAT = np.dtype([("t", "<u4"), ("a", "<u4")])


def read_dat(src, sensor_size=None):
    """Read a Prophesee ``.dat`` file (N-Cars, Gen1 automotive).

    Layout: ASCII header lines starting with '%' (e.g. '% Height 100', '% Width 120', '% Version 2'),
    then 1 byte event type (0x0C = CD, or 0x00 = the older TD type) and 1 byte event size (must be 8),
    then 8-byte little-endian records: uint32 t (µs), uint32 a with x = a & 0x3FFF,
    y = (a >> 14) & 0x3FFF, p = a >> 28. The 32-bit timestamp wraps: a drop of more than 2**31 µs
    between consecutive events is taken as a wrap and adds 2**32 µs to all later events; a smaller
    drop raises ``ValueError``.
    ``sensor_size``: used when given; else (Width, Height, 2) from the header; else (120, 100, 2)
    (N-Cars) when all events fit, else (304, 240, 2) (Gen1). An event outside it raises ``ValueError``.
    """
    buf, name = _load(src)
    if not buf.startswith(b"%"):
        raise _err(name, 0, "missing '%' header")
    pos = _header_end(buf, b"%", name)
    if pos + 2 > len(buf):
        raise _err(name, pos, "missing event type / size bytes")
    if buf[pos] not in (0x00, 0x0C) or buf[pos + 1] != 8:
        raise _err(name, pos, f"unsupported event type {buf[pos]:#04x} / size {buf[pos + 1]} (need CD, 8 bytes)")
    pos += 2
    r = _records(buf, pos, _DAT, name)
    t, a = r["t"].astype(np.int64), r["a"]
    wraps = np.diff(t) < -2**31
    if wraps.any():
        t[1:] += np.cumsum(wraps) << 32
    x, y, p = a & 0x3FFF, (a >> 14) & 0x3FFF, a >> 28
    if sensor_size is None:
        wh = [re.search(rb"^%\s*" + k + rb"\s+(\d{1,9})\s*$", buf[:pos], re.M) for k in (b"Width", b"Height")]
        if all(wh):
            sensor_size = (int(wh[0].group(1)), int(wh[1].group(1)), 2)
            if max(sensor_size[:2]) > 1 << 14:   # x and y are 14-bit fields
                raise _err(name, 0, f"implausible sensor size {sensor_size[:2]} in the header (at most 16384 per side)")
        else:
            fits = len(t) == 0 or (x.max() < NCARS_SIZE[0] and y.max() < NCARS_SIZE[1])
            sensor_size = NCARS_SIZE if fits else GEN1_SIZE
    try:
        size = check_sensor_size(sensor_size)
    except (TypeError, ValueError) as e:
        raise _err(name, 0, f"bad sensor size in header ({e})") from None
    _check(name, lambda i: pos + 8 * i, x, y, t, p, size)
    return _events(x, y, t, p), size


def write_dat(path, events, sensor_size=NCARS_SIZE):
    """Write ``events`` as a Prophesee ``.dat`` (CD events; layout in ``read_dat``) with Width/Height in
    the header. The first t must be < 2**32 and consecutive events < 2**31 µs apart, so wraps decode."""
    w, h, _ = check_sensor_size(sensor_size)
    if w > 2**14 or h > 2**14:
        raise ValueError(f"write_dat: sensor_size must be <= 16384 per side, got {sensor_size}")
    ev = _prepare(events, "write_dat", w, h, np.iinfo(np.int64).max)
    t = ev["t"].astype(np.int64)
    if len(t) and (t[0] >= 2**32 or np.any(np.diff(t) >= 2**31)):
        raise ValueError("write_dat: events['t'] must start below 2**32 µs with gaps below 2**31 µs")
    r = np.empty(len(t), _DAT)
    r["t"] = t & 0xFFFFFFFF
    r["a"] = ev["x"].astype(np.uint32) | (ev["y"].astype(np.uint32) << 14) | (ev["p"].astype(np.uint32) << 28)
    head = f"% Date 1970-01-01 00:00:00\n% Version 2\n% Height {h}\n% Width {w}\n".encode()
    _write(path, [head, bytes([0x0C, 8]), r.tobytes()])


# --------------------------------------------------------------------------- AEDAT 4.0 (DV)
_MAGIC4 = b"#!AER-DAT4.0\r\n"
_EVENT4 = np.dtype({"names": ["t", "x", "y", "p"], "formats": ["<i8", "<i2", "<i2", "u1"],
                    "offsets": [0, 8, 10, 12], "itemsize": 16})   # struct Event, 3 padding bytes


def _fb_root(b, name, base):
    """Fields of the root table of the flatbuffer ``b``: ``(positions, read)`` where ``positions[i]`` is
    field i's offset in ``b`` (None = absent) and ``read(fmt, pos)`` a bounds-checked ``struct`` read.

    Flatbuffer layout: uint32 offset of the root table; a table starts with an int32 that it minus its
    vtable's position; a vtable is uint16 vtable size, uint16 table size, one uint16 offset per field
    (0 = absent). ``base`` is the offset of ``b`` in the file, for error messages."""
    def read(fmt, pos):
        if not 0 <= pos <= len(b) - struct.calcsize(fmt):
            raise _err(name, base + max(pos, 0), "flatbuffer offset out of range")
        return struct.unpack_from(fmt, b, pos)[0]
    table = read("<I", 0)
    vt = table - read("<i", table)
    fields = [read("<H", vt + 4 + 2 * i) for i in range(max(0, read("<H", vt) - 4) // 2)]
    return [table + f if f else None for f in fields], read


def _fb_vector(b, pos, read, itemsize, name, base):
    """``(start, count)`` of the vector (or string) whose uint32 offset sits at ``pos``."""
    start = pos + read("<I", pos)
    n = read("<I", start)
    if start + 4 + n * itemsize > len(b):
        raise _err(name, base + start, f"vector of {n} items runs past the end of its buffer")
    return start + 4, n


def _aedat4_header(buf, name):
    """Parse the IOHeader: ``(compression, end of the packets, XML description, first packet offset)``.

    File start: '#!AER-DAT4.0\\r\\n', uint32 header length, then the IOHeader flatbuffer
    (field 0 int32 compression: 0 none, 1 LZ4, 2 LZ4 high, 3/4 zstd; field 1 int64 dataTablePosition,
    -1 = none; field 2 string infoNode, the XML description of the streams)."""
    if not buf.startswith(_MAGIC4):
        raise _err(name, 0, "missing '#!AER-DAT4.0' magic")
    if len(buf) < 18 or 18 + struct.unpack_from("<I", buf, 14)[0] > len(buf):
        raise _err(name, 14, "truncated header")
    hdr = buf[18:18 + struct.unpack_from("<I", buf, 14)[0]]
    f, read = _fb_root(hdr, name, 18)
    f += [None] * (3 - len(f))
    comp = read("<i", f[0]) if f[0] is not None else 0
    table = read("<q", f[1]) if f[1] is not None else -1
    start, n = _fb_vector(hdr, f[2], read, 1, name, 18) if f[2] is not None else (0, 0)
    if comp not in (0, 1, 2):
        raise _err(name, 18 + f[0], f"unsupported compression {comp} (only none and LZ4 are read)")
    first = 18 + len(hdr)
    if table >= 0 and not first <= table <= len(buf):
        raise _err(name, 18 + f[1], f"dataTablePosition {table} outside the file")
    return comp, (table if table >= 0 else len(buf)), hdr[start:start + n].decode("latin-1"), first


def _aedat4_packet(payload, name, base):
    """Events of one packet payload (a size-prefixed flatbuffer), or None if not an EventPacket ('EVTS')."""
    if len(payload) < 12 or payload[8:12] != b"EVTS":
        return None
    b = payload[4:4 + struct.unpack_from("<I", payload, 0)[0]]
    f, read = _fb_root(b, name, base + 4)
    if not f or f[0] is None:
        return np.zeros(0, _EVENT4), np.zeros(0, np.int64)
    start, n = _fb_vector(b, f[0], read, 16, name, base + 4)
    return np.frombuffer(b, _EVENT4, n, start), base + 4 + start + 16 * np.arange(n)


def read_aedat4(src, sensor_size=None):
    """Read the polarity events of an AEDAT 4.0 file (DV software; DAVIS / DVXplorer cameras).

    Layout: header (see ``_aedat4_header``), then packets until dataTablePosition (or the end): int32
    stream id, uint32 size, ``size`` bytes of payload, an LZ4 frame when the file is compressed. The
    payload is a size-prefixed flatbuffer; those with file identifier 'EVTS' hold an EventPacket whose
    field 0 is a vector of 16-byte events (int64 t µs, int16 x, int16 y, bool on, 3 padding bytes).
    Other streams (frames, IMU, triggers) are skipped. ``sensor_size`` when given, else
    (sizeX, sizeY, 2) from the XML description. Errors inside compressed packets name the packet offset.
    Reading LZ4 files needs the ``lz4`` package (``pip install lz4``).
    """
    buf, name = _load(src)
    comp, end, xml, pos = _aedat4_header(buf, name)
    if comp:
        try:
            import lz4.frame
        except ImportError:
            raise ImportError("read_aedat4: this file is LZ4-compressed; reading it needs lz4 (pip install lz4)") from None
    parts = []
    while pos < end:
        if pos + 8 > end:
            raise _err(name, pos, "truncated packet header")
        size = struct.unpack_from("<I", buf, pos + 4)[0]
        payload, base, nm = buf[pos + 8:pos + 8 + size], pos + 8, name
        if pos + 8 + size > end:
            raise _err(name, pos, f"truncated packet ({size} bytes announced, {end - pos - 8} present)")
        if comp:
            base, nm = 0, f"{name} (LZ4 packet at byte offset {pos}, decompressed)"
            try:
                payload = lz4.frame.decompress(payload)
            except Exception as e:       # lz4 reports corrupt frames with RuntimeError
                raise _err(name, pos, f"bad LZ4 frame ({e})") from None
        part = _aedat4_packet(payload, nm, base)
        if part is not None:
            parts.append(part if not comp else (part[0], np.full(len(part[0]), pos)))
        pos += 8 + size
    if sensor_size is None:
        wh = [re.search(r'key="size' + k + r'"[^>]*>\s*(\d{1,9})\s*<', xml) for k in "XY"]
        if not all(wh):
            raise _err(name, 18, "no sizeX / sizeY in the header's XML; pass sensor_size")
        sensor_size = (int(wh[0].group(1)), int(wh[1].group(1)), 2)
    size = check_sensor_size(sensor_size)
    r = np.concatenate([e for e, _ in parts] + [np.zeros(0, _EVENT4)])
    offs = np.concatenate([o for _, o in parts] + [np.zeros(0, np.int64)])
    x, y = r["x"].astype(np.uint16), r["y"].astype(np.uint16)   # negative -> >= 32768: out of range
    _check(name, lambda i: offs[i], x, y, r["t"], r["p"], size)
    return _events(x, y, r["t"], r["p"]), size


def write_aedat4(path, events, sensor_size, compression="none", packet_size=4096):
    """Write ``events`` as AEDAT 4.0 with one event stream (id 0), ``compression`` "none" or "lz4"
    (needs the lz4 package), packets of at most ``packet_size`` events; see ``read_aedat4``."""
    w, h, _ = check_sensor_size(sensor_size)
    if compression not in ("none", "lz4") or w > 2**15 or h > 2**15 or int(packet_size) < 1:
        raise ValueError("write_aedat4: need compression 'none' | 'lz4', sides <= 32768, packet_size >= 1")
    if compression == "lz4":
        try:
            import lz4.frame
        except ImportError:
            raise ImportError("write_aedat4: LZ4 compression needs lz4 (pip install lz4)") from None
    ev = _prepare(events, "write_aedat4", w, h, np.iinfo(np.int64).max)
    xml = (f'<dv version="2.0"><node name="outInfo" path="/outInfo/"><node name="0" path="/outInfo/0/">'
           f'<attr key="compression" type="string">{compression.upper()}</attr>'
           f'<attr key="typeIdentifier" type="string">EVTS</attr><node name="info" path="/outInfo/0/info/">'
           f'<attr key="sizeX" type="int">{w}</attr><attr key="sizeY" type="int">{h}</attr></node></node></node></dv>').encode()
    # IOHeader: root offset 16 | vtable (10 bytes: sizes 10, 20; fields at 4, 8, 16) + 2 pad | table at 16:
    # soffset 12, compression, dataTablePosition -1, string offset 4 | string: length, bytes, NUL
    hdr = struct.pack("<IHHHHHxxiiqII", 16, 10, 20, 4, 8, 16, 12, int(compression == "lz4"), -1, 4, len(xml)) + xml + b"\0"
    chunks = [_MAGIC4, struct.pack("<I", len(hdr)), hdr]
    r = np.zeros(len(ev), _EVENT4)
    r["t"], r["x"], r["y"], r["p"] = ev["t"], ev["x"], ev["y"], ev["p"]
    for a in range(0, len(r), int(packet_size)):
        n = len(r[a:a + int(packet_size)])
        # size prefix | root offset 16, 'EVTS' | vtable (6, 8, field 0 at 4) + 2 pad | table at 16:
        # soffset 8, vector offset 4 | vector at 24: count, then 16-byte events
        body = struct.pack("<II4sHHHxxiII", 28 + 16 * n, 16, b"EVTS", 6, 8, 4, 8, 4, n) + r[a:a + n].tobytes()
        if compression == "lz4":
            body = lz4.frame.compress(body)
        chunks += [struct.pack("<iI", 0, len(body)), body]
    _write(path, chunks)


# --------------------------------------------------------------------------- npz (the library's cache)
def save_npz(path, events, sensor_size, label=-1):
    """Save to the library's cache format: an uncompressed ``.npz`` without pickles holding ``events``
    (structured array of EVENT_DTYPE), ``sensor_size`` (int64, shape (3,)) and ``label`` (int64 scalar,
    -1 = none). Written atomically."""
    size = check_sensor_size(sensor_size)
    _prepare(events, "save_npz", size[0], size[1], np.iinfo(np.int64).max)
    ev = _events(events["x"], events["y"], events["t"], events["p"])
    bio = io.BytesIO()
    np.savez(bio, events=ev, sensor_size=np.array(size, np.int64), label=np.int64(label))
    _write(path, [bio.getvalue()])


def load_npz(src):
    """Load a file written by ``save_npz`` (with ``allow_pickle=False``): ``(events, sensor_size, label)``.
    Container errors are reported at byte offset 0; bad events at the offset of the ``events`` array."""
    buf, name = _load(src)
    try:
        with np.load(io.BytesIO(buf), allow_pickle=False) as z:
            ev, size, label = z["events"], z["sensor_size"], z["label"]
    except Exception as e:   # zip / npy parsing of untrusted bytes fails in many ways: all become ValueError
        raise _err(name, 0, f"not a minisnn npz ({type(e).__name__}: {e})") from None
    if ev.dtype != EVENT_DTYPE or ev.ndim != 1 or size.shape != (3,) or label.shape != ():
        raise _err(name, 0, "arrays 'events', 'sensor_size', 'label' have the wrong dtype or shape")
    if not (np.issubdtype(size.dtype, np.integer) and np.issubdtype(label.dtype, np.integer)):
        raise _err(name, 0, "'sensor_size' and 'label' must be integers")
    try:
        size = check_sensor_size(size)
    except ValueError as e:
        raise _err(name, 0, str(e)) from None
    at = buf.find(b"events.npy")
    _check(name, lambda i: max(at, 0), ev["x"], ev["y"], ev["t"], ev["p"], size)
    return ev, size, int(label)
