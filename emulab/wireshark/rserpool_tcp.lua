-- RSerPool over TCP as emulab's rserpool frames it (rserpool/transport.py), for stock Wireshark/tshark.
--
-- Without SCTP, rserpool carries its messages over TCP in two framings:
--   * registrar ports (ASAP 3863, ENRP 9901): messages back to back, cut by their own 16-bit length
--     (type u8, flags u8, length u16); Wireshark's ASAP dissector sits on TCP 3863 but does not
--     reassemble, and nothing decodes ENRP on TCP;
--   * pool element session channels (any port): an 8-byte tag -- PPID u32, payload length u32, network
--     order -- before each message, so ASAP, CalcApp (PPID 34) and the Fractal Generator Protocol
--     (PPID 32) share the channel as they would share an SCTP association.
-- This script cuts both kinds of stream into messages (dissect_tcp_pdus: messages split over
-- segments are reassembled) and hands each message to the dissector Wireshark itself registers for
-- that SCTP PPID ("sctp.ppi" table: asap, enrp, calcappprotocol, fractalgeneratorprotocol), so the
-- packets decode exactly as RSPLIB's SCTP traffic does.
--
-- Load it with `emulab tshark ...` / `emulab wireshark ...`, or `tshark -X lua_script:THIS_FILE`.

local PPID_NAMES = {
  [11] = "ASAP", [12] = "ENRP", [32] = "Fractal Generator Protocol", [34] = "CalcApp",
  [0x29097601] = "Fractal Generator Protocol (legacy)", [0x29097603] = "CalcApp (legacy)",
}
local MAX_MESSAGE = 65536  -- rserpool's (and RSPLIB's) largest message
local ASAP_PORT, ENRP_PORT = 3863, 9901

local sctp_ppi = DissectorTable.get("sctp.ppi")

-- ---------------------------------------------------------------- PPID-tagged session channels

local tagged = Proto("rserpool_tagged", "RSerPool TCP framing (emulab PPID tag)")
local f_ppid = ProtoField.uint32("rserpool_tagged.ppid", "Payload Protocol Identifier", base.DEC, PPID_NAMES)
local f_length = ProtoField.uint32("rserpool_tagged.length", "Payload length", base.DEC)
tagged.fields = { f_ppid, f_length }

local function tagged_pdu_length(tvb, _pinfo, offset)
  return tvb(offset + 4, 4):uint() + 8
end

local function tagged_pdu(tvb, pinfo, tree)
  local ppid = tvb(0, 4):uint()
  local sub = tree:add(tagged, tvb(0, 8))
  sub:add(f_ppid, tvb(0, 4))
  sub:add(f_length, tvb(4, 4))
  if tvb:len() > 8 then
    sctp_ppi:try(ppid, tvb(8):tvb(), pinfo, tree)
  end
  return tvb:len()
end

function tagged.dissector(tvb, pinfo, tree)
  dissect_tcp_pdus(tvb, tree, 8, tagged_pdu_length, tagged_pdu)
  return tvb:len()
end

-- A stream is ours if it starts with a tag of a known PPID whose length equals the length field
-- of the message behind it (ASAP, ENRP, CalcApp and FGP all have type, flags, length u16): strict
-- enough not to claim anyone else's TCP. The conversation then stays ours in both directions.
local function tagged_heuristic(tvb, pinfo, tree)
  if tvb:len() < 12 then return false end
  local ppid = tvb(0, 4):uint()
  if PPID_NAMES[ppid] == nil then return false end
  local length = tvb(4, 4):uint()
  if length < 4 or length > MAX_MESSAGE or tvb(10, 2):uint() ~= length then return false end
  pinfo.conversation = tagged
  tagged.dissector(tvb, pinfo, tree)
  return true
end
tagged:register_heuristic("tcp", tagged_heuristic)

-- ---------------------------------------------------------------- length-framed registrar ports

local framed = Proto("rserpool_framed", "RSerPool TCP framing (message length)")

local function framed_pdu_length(tvb, _pinfo, offset)
  local length = tvb(offset + 2, 2):uint()
  if length < 4 then  -- not a message boundary: take the rest as one undecodable piece
    return tvb:len() - offset
  end
  return length
end

function framed.dissector(tvb, pinfo, tree)
  local ppid = (pinfo.src_port == ENRP_PORT or pinfo.dst_port == ENRP_PORT) and 12 or 11
  dissect_tcp_pdus(tvb, tree, 4, framed_pdu_length, function(sub, pi, tr)
    sctp_ppi:try(ppid, sub, pi, tr)
    return sub:len()
  end)
  return tvb:len()
end

local tcp_port = DissectorTable.get("tcp.port")
tcp_port:add(ASAP_PORT, framed)  -- replaces the ASAP dissector's own entry, which does not reassemble
tcp_port:add(ENRP_PORT, framed)
