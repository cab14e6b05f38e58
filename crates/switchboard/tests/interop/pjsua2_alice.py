"""pjsua2 (PJSIP 2.15, PyPI pjsua2-python) as alice for the interop matrix (issue 12).

Driven by crates/switchboard/tests/interop_pjsua2.rs. With pjsua2's defaults but for
what a headless test must set (no sound card: the null device; SIP and RTP bound to
127.0.0.1 on given ports), it registers with a password through the server, sends bob a
MESSAGE, calls him, plays a WAV into the call and records the call into another, sends
DTMF (RFC 4733, pjsua2's default), holds and resumes (re-INVITEs), hangs up. It prints
one line per event, for the test to check:

    registered: 200 OK | registration failed: CODE REASON
    message: 200 OK
    call: confirmed | call: disconnected CODE REASON
    media: active | media: held
    dtmf sent: 15#
    done
"""

import argparse
import sys
import time

import pjsua2 as pj


def say(text):
    print(text, flush=True)


class Account(pj.Account):
    def __init__(self):
        super().__init__()
        self.reg_code = None
        self.message_status = None

    def onInstantMessageStatus(self, prm):
        self.message_status = prm.code
        say(f"message: {prm.code} {prm.reason}")

    def onRegState(self, prm):
        self.reg_code = prm.code
        if prm.code // 100 == 2 and prm.expiration > 0:
            say(f"registered: {prm.code} {prm.reason}")
        elif prm.code // 100 != 2:
            say(f"registration failed: {prm.code} {prm.reason}")


class Buddy(pj.Buddy):
    def __init__(self):
        super().__init__()
        self.status = None

    def onInstantMessageStatus(self, prm):
        self.status = prm.code
        say(f"message: {prm.code} {prm.reason}")


class Call(pj.Call):
    def __init__(self, account, play, recorder):
        super().__init__(account)
        self.play = play
        self.player = None
        self.recorder = recorder
        self.confirmed = False
        self.ended = False

    def onCallState(self, prm):
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED and not self.confirmed:
            self.confirmed = True
            say("call: confirmed")
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.ended = True
            say(f"call: disconnected {info.lastStatusCode} {info.lastReason}")

    def onCallMediaState(self, prm):
        # An exception in a pjsua2 callback is lost: print it.
        try:
            self.media_state()
        except Exception as e:  # noqa: BLE001
            say(f"error: onCallMediaState: {e!r}")

    def media_state(self):
        info = self.getInfo()
        for i, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            if media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                audio = self.getAudioMedia(i)
                # The call's conference port changes whenever pjsua2 remakes its
                # stream (it re-INVITEs to lock one codec when the answer names
                # several, and on hold and resume): connect the file and the recorder
                # each time. The player is made once, when the call first has media:
                # it plays from when it is made.
                if self.player is None:
                    self.player = pj.AudioMediaPlayer()
                    self.player.createPlayer(self.play, pj.PJMEDIA_FILE_NO_LOOP)
                self.player.startTransmit(audio)
                audio.startTransmit(self.recorder)
                say("media: active")
            elif media.status == pj.PJSUA_CALL_MEDIA_LOCAL_HOLD:
                say("media: held")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True, help="HOST:PORT of the registrar/proxy")
    ap.add_argument("--transport", choices=["udp", "tcp", "tls"], default="udp")
    ap.add_argument("--ca", help="PEM file of the server certificate to trust (TLS)")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--sip-port", type=int, required=True)
    ap.add_argument("--rtp-port", type=int, required=True)
    ap.add_argument("--play", required=True)
    ap.add_argument("--record", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--dtmf", default="15#")
    args = ap.parse_args()

    ep = pj.Endpoint()
    ep.libCreate()
    ec = pj.EpConfig()
    ec.logConfig.level = 1
    ec.logConfig.consoleLevel = 1
    # Every SIP callback in this thread (the one that holds Python's lock), from
    # libHandleEvents(): a pjsua2 worker thread would wait for the lock.
    ec.uaConfig.threadCnt = 0
    ec.uaConfig.mainThreadOnly = True
    ep.libInit(ec)

    kinds = {
        "udp": pj.PJSIP_TRANSPORT_UDP,
        "tcp": pj.PJSIP_TRANSPORT_TCP,
        "tls": pj.PJSIP_TRANSPORT_TLS,
    }
    tc = pj.TransportConfig()
    tc.port = args.sip_port
    # Loopback only: bound to 127.0.0.1 and saying so in Via, Contact and SDP (by
    # default pjsua2 names the host's first interface, which it is not bound to).
    tc.boundAddress = "127.0.0.1"
    tc.publicAddress = "127.0.0.1"
    if args.transport == "tls":
        tc.tlsConfig.CaListFile = args.ca
        tc.tlsConfig.verifyServer = True
    transport_id = ep.transportCreate(kinds[args.transport], tc)
    ep.libStart()
    ep.audDevManager().setNullDev()

    param = f";transport={args.transport}" if args.transport != "udp" else ""
    ac = pj.AccountConfig()
    ac.idUri = f"sip:{args.user}@127.0.0.1"
    ac.regConfig.registrarUri = f"sip:{args.server}{param}"
    # The server is the outbound proxy: calls and messages to sip:bob@127.0.0.1 go
    # through it (its port is not 5060).
    ac.sipConfig.proxies.append(f"sip:{args.server}{param};lr")
    ac.sipConfig.transportId = transport_id
    ac.sipConfig.authCreds.append(
        pj.AuthCredInfo("digest", "*", args.user, 0, args.password)
    )
    ac.mediaConfig.transportConfig.port = args.rtp_port
    ac.mediaConfig.transportConfig.portRange = 4
    ac.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    ac.mediaConfig.transportConfig.publicAddress = "127.0.0.1"
    account = Account()
    account.create(ac)

    def pump(seconds, until=lambda: False):
        end = time.time() + seconds
        while time.time() < end and not until():
            ep.libHandleEvents(20)

    pump(5, lambda: account.reg_code is not None)
    if account.reg_code is None or account.reg_code // 100 != 2:
        say(f"registration failed: {account.reg_code}")

    bc = pj.BuddyConfig()
    bc.uri = args.target
    buddy = Buddy()
    buddy.create(account, bc)
    mp = pj.SendInstantMessageParam()
    mp.content = "hello from pjsua2"
    buddy.sendInstantMessage(mp)
    pump(5, lambda: buddy.status is not None or account.message_status is not None)

    recorder = pj.AudioMediaRecorder()
    recorder.createRecorder(args.record)
    call = Call(account, args.play, recorder)
    call.makeCall(args.target, pj.CallOpParam(True))
    pump(10, lambda: call.confirmed or call.ended)
    if call.confirmed:
        pump(3.5)
        call.dialDtmf(args.dtmf)
        say(f"dtmf sent: {args.dtmf}")
        pump(1.5)
        call.setHold(pj.CallOpParam(True))
        pump(1.0)
        resume = pj.CallOpParam(True)
        resume.opt.flag = pj.PJSUA_CALL_UNHOLD
        call.reinvite(resume)
        pump(1.0)
        call.hangup(pj.CallOpParam(True))
        pump(5, lambda: call.ended)

    account.shutdown()
    pump(1)
    # pjsua2 objects go before libDestroy(), else Python aborts at exit; the recorder's
    # WAV header is written when it is destroyed.
    call.player = None
    del call, recorder, buddy, account
    ep.libDestroy()
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
