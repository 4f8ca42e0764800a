"""Reading a tcpdump capture (pcap, Ethernet or Linux cooked) of a compose
network and judging every TCP byte stream in it: each direction of each
connection must be a run of well-formed TLS records from its first byte
(test_compose.py's "every TCP payload on the network is TLS").

A stream is judged from the SYN on, so the capture must start before the
connections do; a connection whose SYN is missing is reported, not trusted.
A stream is read in sequence order up to its first hole (a segment the
capture lacks); what lies beyond a hole is not judged.  TLS records: content
type 20-23 (change_cipher_spec, alert, handshake, application_data), version
3.x, length at most 2^14 + 2048; the first record of each direction a
handshake.
"""

import struct

TLS_TYPES = (20, 21, 22, 23)
TLS_MAX_RECORD = 16384 + 2048


def _packets(data):
    """(linktype, frame bytes) for each whole record of a pcap file."""
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        end = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        end = ">"
    else:
        raise ValueError("not a pcap file (magic %r)" % magic)
    linktype = struct.unpack(end + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        incl = struct.unpack(end + "I", data[off + 8:off + 12])[0]
        if off + 16 + incl > len(data):
            break  # tcpdump is still writing this one
        yield linktype, data[off + 16:off + 16 + incl]
        off += 16 + incl


def _ipv4(linktype, frame):
    """The IPv4 packet in a frame, or None."""
    if linktype == 1:  # Ethernet
        off, ethertype = 14, frame[12:14]
        while ethertype in (b"\x81\x00", b"\x88\xa8") and len(frame) >= off + 4:
            ethertype, off = frame[off + 2:off + 4], off + 4
    elif linktype == 113:  # Linux cooked (tcpdump -i any)
        off, ethertype = 16, frame[14:16]
    else:
        raise ValueError("pcap link type %d: capture on the bridge (Ethernet)" % linktype)
    if ethertype != b"\x08\x00":
        return None
    return frame[off:]


def tcp_segments(data):
    """(src, sport, dst, dport, seq, flags, payload) of each IPv4 TCP segment."""
    for linktype, frame in _packets(data):
        ip = _ipv4(linktype, frame)
        if ip is None or len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
            continue
        ihl = (ip[0] & 15) * 4
        total = struct.unpack(">H", ip[2:4])[0] or len(ip)
        tcp = ip[ihl:total]
        if len(tcp) < 20:
            continue
        sport, dport, seq = struct.unpack(">HHI", tcp[:8])
        doff = (tcp[12] >> 4) * 4
        src = ".".join(str(b) for b in ip[12:16])
        dst = ".".join(str(b) for b in ip[16:20])
        yield src, sport, dst, dport, seq, tcp[13], bytes(tcp[doff:])


class Stream:
    """One direction of one connection."""

    def __init__(self, key):
        self.key = key  # (src, sport, dst, dport)
        self.isn = None
        self.segs = {}

    def add(self, seq, flags, payload):
        if flags & 0x02:  # SYN
            self.isn = seq
        if payload:
            self.segs.setdefault(seq, payload)

    def data(self):
        """The bytes from the SYN on, up to the first hole."""
        if self.isn is None:
            return None
        nxt, out = 1, bytearray()
        rel = sorted(((s - self.isn) % 2**32, p) for s, p in self.segs.items())
        for off, p in rel:
            if off > nxt:
                break
            if off + len(p) > nxt:
                out += p[nxt - off:]
                nxt = off + len(p)
        return bytes(out)


def tls_verdict(stream_bytes):
    """None when the bytes are TLS records from the first (the last may be
    cut short), else why not."""
    off, first = 0, True
    while off + 5 <= len(stream_bytes):
        typ, major, minor, length = struct.unpack(">BBBH", stream_bytes[off:off + 5])
        if typ not in TLS_TYPES or major != 3 or minor > 4 or not 0 < length <= TLS_MAX_RECORD:
            return "not a TLS record at byte %d: %r" % (off, stream_bytes[off:off + 24])
        if first and typ != 22:
            return "first record is type %d, not a handshake" % typ
        first = False
        off += 5 + length
    if off < len(stream_bytes) and first and not stream_bytes.startswith(b"\x16\x03"):
        return "not a TLS record at byte 0: %r" % stream_bytes[:24]
    return None


def judge(path):
    """Every stream with a payload in the capture at path: a list of dicts
    with key (src, sport, dst, dport), bytes (judged), why (None if TLS),
    and the raw payload bytes of all streams as one blob."""
    with open(path, "rb") as f:
        data = f.read()
    streams = {}
    for src, sport, dst, dport, seq, flags, payload in tcp_segments(data):
        key = (src, sport, dst, dport)
        st = streams.get(key) or streams.setdefault(key, Stream(key))
        st.add(seq, flags, payload)
    out, blob = [], bytearray()
    for key, st in sorted(streams.items()):
        if not st.segs:
            continue
        for p in st.segs.values():
            blob += p
        got = st.data()
        if got is None:
            out.append({"key": key, "bytes": 0,
                        "why": "no SYN in the capture: started before it, not judged"})
            continue
        out.append({"key": key, "bytes": len(got), "why": tls_verdict(got)})
    return out, bytes(blob)
