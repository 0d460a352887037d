-- Wireshark/tshark dissector for the zc-rx testbed's packets: PSP (Google's PSP Security
-- Protocol, UDP port 1000) with the testbed's placement hint.
--
--   tshark -X lua_script:wireshark/psp_hint.lua -r capture.pcap -V -O psp
--   tshark -X lua_script:wireshark/psp_hint.lua -r capture.pcap -Y 'psp.hint.region == 1'
--
-- `cargo xtask wireshark` installs it into the personal plugin folder. Works with the Lua
-- of Wireshark 4.0 (Lua 5.2, Debian 12) and later (Lua 5.4): no bit library, only
-- arithmetic.
--
-- Layout (docs/design.md, "Wire format"): the PSP header (16 bytes), the virtualization
-- cookie (8, when V = 1), the extension area (the 16-byte placement hint: region,
-- generation, offset, base sequence), the clear TCP header (when the crypt offset leaves it
-- in the clear: handed to Wireshark's TCP dissector, so tcp.seq works in filters), the
-- encrypted payload, and the 16-byte ICV.

local psp = Proto("psp", "PSP Security Protocol (zc-rx testbed, with placement hint)")

local versions = {
    [0] = "AES-GCM-128",
    [1] = "AES-GCM-256",
    [2] = "AES-GMAC-128",
    [3] = "AES-GMAC-256",
}

local f = {
    next_header = ProtoField.uint8("psp.next_header", "Next header", base.DEC),
    hdr_ext_len = ProtoField.uint8("psp.hdr_ext_len", "Header extension length", base.DEC),
    crypt_offset = ProtoField.uint8("psp.crypt_offset", "Crypt offset (4-octet units)", base.DEC, nil, 0x3F),
    s = ProtoField.bool("psp.s", "S (sample)", 8, nil, 0x80),
    d = ProtoField.bool("psp.d", "D (drop after sampling)", 8, nil, 0x40),
    version = ProtoField.uint8("psp.version", "Version", base.DEC, versions, 0x3C),
    v = ProtoField.bool("psp.v", "V (virtualization cookie present)", 8, nil, 0x02),
    always_one = ProtoField.uint8("psp.always_one", "Always 1", base.DEC, nil, 0x01),
    spi = ProtoField.uint32("psp.spi", "SPI", base.HEX),
    key_phase = ProtoField.uint32("psp.spi.key_phase", "Key phase", base.DEC, nil, 0x80000000),
    iv = ProtoField.bytes("psp.iv", "IV"),
    vc = ProtoField.bytes("psp.vc", "Virtualization cookie"),
    ext = ProtoField.bytes("psp.extension", "Extension area"),
    hint = ProtoField.none("psp.hint", "Placement hint"),
    hint_region = ProtoField.uint32("psp.hint.region", "Region", base.DEC),
    hint_generation = ProtoField.uint16("psp.hint.generation", "Generation", base.DEC),
    hint_offset = ProtoField.uint64("psp.hint.offset", "Offset", base.DEC),
    hint_base_seq = ProtoField.uint32("psp.hint.base_seq", "Base TCP sequence", base.DEC),
    payload = ProtoField.bytes("psp.encrypted", "Encrypted data"),
    icv = ProtoField.bytes("psp.icv", "ICV"),
}
psp.fields = {
    f.next_header, f.hdr_ext_len, f.crypt_offset, f.s, f.d, f.version, f.v, f.always_one,
    f.spi, f.key_phase, f.iv, f.vc, f.ext, f.hint, f.hint_region, f.hint_generation,
    f.hint_offset, f.hint_base_seq, f.payload, f.icv,
}

local e = {
    short = ProtoExpert.new("psp.short", "Shorter than a PSP header and ICV", expert.group.MALFORMED, expert.severity.ERROR),
    always_one = ProtoExpert.new("psp.always_one.bad", "The always-1 bit is 0", expert.group.MALFORMED, expert.severity.ERROR),
    bad_version = ProtoExpert.new("psp.version.bad", "No such PSP version", expert.group.MALFORMED, expert.severity.ERROR),
    ext_len = ProtoExpert.new("psp.hdr_ext_len.bad", "Header extension length past the segment", expert.group.MALFORMED, expert.severity.ERROR),
    no_vc_room = ProtoExpert.new("psp.vc.missing", "V is set but the header has no room for a cookie", expert.group.MALFORMED, expert.severity.ERROR),
    not_hint = ProtoExpert.new("psp.extension.not_hint", "Extension area that is not a 16-byte placement hint", expert.group.PROTOCOL, expert.severity.WARN),
    crypt = ProtoExpert.new("psp.crypt_offset.bad", "Crypt offset past the end of the segment", expert.group.MALFORMED, expert.severity.ERROR),
}
psp.experts = { e.short, e.always_one, e.bad_version, e.ext_len, e.no_vc_room, e.not_hint, e.crypt }

local BASE_LEN = 16
local ICV_LEN = 16
local TCP_MIN = 20
local tcp_dissector = Dissector.get("tcp")

-- Bit `mask` (a power of two) of `byte`, without a bit library.
local function bit_set(byte, mask)
    return math.floor(byte / mask) % 2 == 1
end

local function dissect_hint(tvb, tree, at)
    local h = tree:add(f.hint, tvb(at, 16))
    h:add(f.hint_region, tvb(at, 4))
    h:add(f.hint_generation, tvb(at + 4, 2))
    h:add(f.hint_offset, tvb(at + 6, 6), tvb(at + 6, 6):uint64())
    h:add(f.hint_base_seq, tvb(at + 12, 4))
    h:append_text(string.format(": region %d, generation %d, offset %s, base seq %d",
        tvb(at, 4):uint(), tvb(at + 4, 2):uint(), tostring(tvb(at + 6, 6):uint64()),
        tvb(at + 12, 4):uint()))
end

function psp.dissector(tvb, pinfo, tree)
    local len = tvb:len()
    pinfo.cols.protocol = "PSP"
    local root = tree:add(psp, tvb())
    if len < BASE_LEN + ICV_LEN then
        root:add_proto_expert_info(e.short)
        return len
    end
    local next_header = tvb(0, 1):uint()
    local ext_len = tvb(1, 1):uint()
    local flags = tvb(3, 1):uint()
    local crypt_offset = tvb(2, 1):uint() % 64
    local version = math.floor(flags / 4) % 16
    local has_vc = bit_set(flags, 0x02)
    local hdr_len = (ext_len + 1) * 8

    root:add(f.next_header, tvb(0, 1))
    root:add(f.hdr_ext_len, tvb(1, 1)):append_text(string.format(" (%d header bytes)", hdr_len))
    root:add(f.crypt_offset, tvb(2, 1)):append_text(string.format(" (%d bytes after the IV)", crypt_offset * 4))
    root:add(f.s, tvb(3, 1))
    root:add(f.d, tvb(3, 1))
    local vi = root:add(f.version, tvb(3, 1))
    if versions[version] == nil then
        vi:add_proto_expert_info(e.bad_version)
    end
    root:add(f.v, tvb(3, 1))
    local one = root:add(f.always_one, tvb(3, 1))
    if flags % 2 ~= 1 then
        one:add_proto_expert_info(e.always_one)
    end
    root:add(f.spi, tvb(4, 4))
    root:add(f.key_phase, tvb(4, 4))
    root:add(f.iv, tvb(8, 8))

    local segment_end = len - ICV_LEN
    if hdr_len < BASE_LEN or hdr_len > segment_end then
        root:add_proto_expert_info(e.ext_len)
        root:add(f.icv, tvb(segment_end, ICV_LEN))
        return len
    end
    local at = BASE_LEN
    if has_vc then
        if hdr_len < at + 8 then
            root:add_proto_expert_info(e.no_vc_room)
        else
            root:add(f.vc, tvb(at, 8))
            at = at + 8
        end
    end
    local ext = hdr_len - at
    if ext == 16 then
        dissect_hint(tvb, root, at)
    elseif ext > 0 then
        root:add(f.ext, tvb(at, ext)):add_proto_expert_info(e.not_hint)
    end

    local crypt_start = BASE_LEN + crypt_offset * 4
    if crypt_start > segment_end then
        root:add_proto_expert_info(e.crypt)
        crypt_start = segment_end
    end
    -- The clear TCP header, to Wireshark's TCP dissector (tcp.seq, tcp.srcport, ...).
    local clear = crypt_start - hdr_len
    if next_header == 6 and clear >= TCP_MIN then
        local data_offset = math.floor(tvb(hdr_len + 12, 1):uint() / 16) * 4
        if data_offset >= TCP_MIN and data_offset <= clear then
            tcp_dissector:call(tvb(hdr_len, data_offset):tvb(), pinfo, tree)
        end
    end
    if segment_end > crypt_start then
        root:add(f.payload, tvb(crypt_start, segment_end - crypt_start))
    end
    root:add(f.icv, tvb(segment_end, ICV_LEN))
    pinfo.cols.protocol = "PSP"
    pinfo.cols.info:prepend(string.format("PSP SPI 0x%08x %s ", tvb(4, 4):uint(),
        versions[version] or "?"))
    return len
end

DissectorTable.get("udp.port"):add(1000, psp)
