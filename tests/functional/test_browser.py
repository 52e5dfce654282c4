"""A real browser as a party: headless Chromium (Debian's `chromium`, fake
camera and microphone), driven by Playwright, joins a session through our
WebSocket (hello authentication) and sends its camera to the server's
recorder through our signaling; the recording is produced and readable.

Skipped when Chromium is not installed (`apt install chromium`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlparse

from playwright.async_api import async_playwright

from tests.chromium import launch
from tests.conftest import MakeServer
from tests.flows import PH, assigned_session
from tests.media_peers import Party, media_seconds

# Runs in the page: join, take the fake camera, offer it to the recorder once
# ICE gathering is complete, apply the recorder's answer. Resolves once media
# flows (the connection is up).
BROWSER_PARTY = """
async ({url, token, sid, location}) => {
  const ws = new WebSocket(url, ["enf.v1.json"]);
  const inbox = [];
  const waiters = [];
  ws.onmessage = (m) => {
    const f = JSON.parse(m.data);
    inbox.push(f);
    for (const w of waiters.splice(0)) w();
  };
  const next = async (pred) => {
    for (;;) {
      const i = inbox.findIndex(pred);
      if (i >= 0) return inbox.splice(i, 1)[0];
      await new Promise((r) => waiters.push(r));
    }
  };
  let n = 0;
  const call = async (type, data) => {
    const id = "b" + (++n);
    ws.send(JSON.stringify({id, type, data}));
    const r = await next((f) => f.re === id);
    if (!r.ok) throw new Error(type + ": " + JSON.stringify(r.error));
    return r.data;
  };
  await new Promise((r) => (ws.onopen = r));
  ws.send(JSON.stringify({type: "hello", data: {token}}));
  await next((f) => f.type === "welcome");
  await call("session.join", {session_id: sid, location,
                              consent: {recording: true, privacy: true}});
  window.enfCall = call;
  window.enfNext = next;
  return "joined";
}
"""

BROWSER_RECORD = """
async ({sid}) => {
  const stream = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480},
                                                            audio: true});
  const pc = new RTCPeerConnection();
  for (const t of stream.getTracks()) pc.addTrack(t, stream);
  await pc.setLocalDescription(await pc.createOffer());
  if (pc.iceGatheringState !== "complete") {
    await new Promise((r) => pc.addEventListener("icegatheringstatechange",
      () => pc.iceGatheringState === "complete" && r()));
  }
  await window.enfCall("signal", {session_id: sid, to: "recorder", kind: "offer",
                                  sdp: pc.localDescription.sdp});
  const answer = await window.enfNext((f) => f.type === "event" && f.name === "signal"
                                             && f.data.from === "recorder");
  await pc.setRemoteDescription({type: "answer", sdp: answer.data.sdp});
  await new Promise((r) => {
    const check = () => pc.connectionState === "connected" && r();
    pc.addEventListener("connectionstatechange", check);
    check();
  });
  window.enfPc = pc;
  return stream.getVideoTracks()[0].label;
}
"""


async def test_a_browser_sends_its_camera_to_the_recorder(
    make_server: MakeServer, tmp_path: Path
) -> None:
    h = await make_server(recording="required")
    customer, notary, sid = await assigned_session(h)
    await customer.close()  # the browser is the customer from here on
    await notary.call("session.join", {"session_id": sid, "location": PH})
    async with async_playwright() as p:
        browser = await launch(p)
        try:
            page = await browser.new_page()
            await page.goto(h.url("/health"))  # an http://127.0.0.1 origin: a secure context
            joined = await page.evaluate(
                BROWSER_PARTY,
                {
                    "url": h.ws_url,
                    "token": h.token("c1", "customer"),
                    "sid": sid,
                    "location": PH,
                },
            )
            assert joined == "joined"
            await notary.call("video.start", {"session_id": sid})
            label = await asyncio.wait_for(page.evaluate(BROWSER_RECORD, {"sid": sid}), 60)
            assert label.startswith("fake_device")  # Chromium's fake camera
            n = Party(notary, sid)
            await n.call_recorder()
            await notary.expect("recording.started", timeout=20)
            await asyncio.sleep(3)
            await page.screenshot(path=str(tmp_path / "browser-party.png"))
            await notary.call("video.end", {"session_id": sid})
            await n.close()
        finally:
            await browser.close()
    ready = (await notary.expect("recording.ready", timeout=60))["data"]
    by_user = {t["user_id"]: t for t in ready["tracks"]}
    assert set(by_user) == {"c1", "n1"}
    path = Path(urlparse(by_user["c1"]["url"]).path)
    assert media_seconds(path) > 2.0
