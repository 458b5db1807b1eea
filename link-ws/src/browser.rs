//! The browser client (wasm32): the page's `WebSocket` as a [`Link`].
//!
//! Binary messages arrive as `ArrayBuffer`s. The browser reads the socket
//! by itself and cannot be told to stop, so received messages wait in a
//! queue bounded by [`WsConfig::max_queued`]; past it the link fails (a
//! counted overflow) rather than grow without bound. Sending copies the
//! slot into the browser's send buffer; `reserve` waits, polling with a
//! timer, while `bufferedAmount` is above [`WsConfig::high_water`].

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use futures_timer::Delay;
use link_types::{
    Backing, Link, LinkCaps, LinkError, LinkRx, LinkTx, LinkTxPermit, MaybeSendFuture, WriteSlot,
};
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{BinaryType, CloseEvent, Event, MessageEvent, WebSocket};

use crate::close;
use crate::stats::{Counters, WsStatsHandle};
use crate::{WsConfig, WsError, WsMessage};

/// An error the browser reported, as a `std::error::Error`.
#[derive(Debug)]
struct BrowserError(String);

impl std::fmt::Display for BrowserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BrowserError {}

fn js_text(v: &wasm_bindgen::JsValue) -> String {
    v.as_string().unwrap_or_else(|| format!("{v:?}"))
}

#[derive(Default)]
struct State {
    queue: VecDeque<WsMessage>,
    queued_bytes: usize,
    opened: bool,
    /// How the connection ended, once it has: `Ok` after a normal close.
    end: Option<Result<(), LinkError>>,
    rx_waker: Option<Waker>,
    open_waker: Option<Waker>,
}

struct Handlers {
    _open: Closure<dyn FnMut(Event)>,
    _message: Closure<dyn FnMut(MessageEvent)>,
    _error: Closure<dyn FnMut(Event)>,
    _close: Closure<dyn FnMut(CloseEvent)>,
}

struct Shared {
    ws: WebSocket,
    state: Rc<RefCell<State>>,
    counters: Arc<Counters>,
    caps: LinkCaps,
    config: WsConfig,
    handlers: RefCell<Option<Handlers>>,
}

impl Shared {
    /// Fail the connection from our side: record `err` and close with an
    /// application close code.
    fn fail(state: &mut State, ws: &WebSocket, code: u16, reason: &str, err: LinkError) {
        if state.end.is_none() {
            state.end = Some(Err(err));
        }
        let _ = ws.close_with_code_and_reason(code, reason);
        if let Some(w) = state.rx_waker.take() {
            w.wake();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Unhook the handlers before their closures are freed, then close.
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onerror(None);
        self.ws.set_onclose(None);
        if self.ws.ready_state() <= WebSocket::OPEN {
            let _ = self
                .ws
                .close_with_code_and_reason(close::APP_GONE, "link dropped");
        }
        self.handlers.borrow_mut().take();
    }
}

/// The browser's WebSocket as a reliable, ordered [`Link`].
pub struct WsLink {
    tx: WsTx,
    rx: WsRx,
}

impl std::fmt::Debug for WsLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsLink")
            .field("caps", &self.tx.shared.caps)
            .finish_non_exhaustive()
    }
}

impl WsLink {
    // r[impl ws.browser.connect]
    /// Open a WebSocket to `url` (`ws://` or `wss://`) and wait until it is
    /// open. Fails with [`WsError::Browser`] if the browser refuses the URL
    /// or the connection fails before opening, and with
    /// [`WsError::Timeout`] after [`WsConfig::handshake_timeout`].
    pub async fn connect(url: &str, config: &WsConfig) -> Result<WsLink, WsError> {
        config.validate().map_err(WsError::InvalidConfig)?;
        let ws = WebSocket::new(url).map_err(|e| WsError::Browser(js_text(&e)))?;
        ws.set_binary_type(BinaryType::Arraybuffer);
        let state = Rc::new(RefCell::new(State::default()));
        let counters = Arc::new(Counters::default());

        let on_open = {
            let state = state.clone();
            Closure::<dyn FnMut(Event)>::new(move |_| {
                let mut s = state.borrow_mut();
                s.opened = true;
                if let Some(w) = s.open_waker.take() {
                    w.wake();
                }
            })
        };
        let on_message = {
            let (state, counters, ws2, config) =
                (state.clone(), counters.clone(), ws.clone(), config.clone());
            Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
                on_message(&state, &counters, &ws2, &config, ev)
            })
        };
        let on_error = {
            let state = state.clone();
            Closure::<dyn FnMut(Event)>::new(move |_| {
                let mut s = state.borrow_mut();
                if s.end.is_none() {
                    s.end = Some(Err(LinkError::transport(BrowserError(
                        "the browser reported a WebSocket error".into(),
                    ))));
                }
                if let Some(w) = s.rx_waker.take() {
                    w.wake();
                }
                if let Some(w) = s.open_waker.take() {
                    w.wake();
                }
            })
        };
        let on_close = {
            let state = state.clone();
            Closure::<dyn FnMut(CloseEvent)>::new(move |ev: CloseEvent| {
                let mut s = state.borrow_mut();
                if s.end.is_none() {
                    s.end = Some(if ev.was_clean() {
                        close::end_for_close(Some(ev.code()), &ev.reason())
                    } else {
                        Err(LinkError::PeerGone)
                    });
                }
                if let Some(w) = s.rx_waker.take() {
                    w.wake();
                }
                if let Some(w) = s.open_waker.take() {
                    w.wake();
                }
            })
        };
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));

        let shared = Rc::new(Shared {
            ws,
            state,
            counters,
            caps: LinkCaps::reliable_ordered(config.max_payload),
            config: config.clone(),
            handlers: RefCell::new(Some(Handlers {
                _open: on_open,
                _message: on_message,
                _error: on_error,
                _close: on_close,
            })),
        });

        let opened = poll_fn(|cx| {
            let mut s = shared.state.borrow_mut();
            if s.opened {
                Poll::Ready(Ok(()))
            } else if let Some(end) = &s.end {
                let why = match end {
                    Ok(()) => "closed before it opened".to_string(),
                    Err(e) => e.to_string(),
                };
                Poll::Ready(Err(WsError::Browser(format!(
                    "could not open {url}: {why}"
                ))))
            } else {
                s.open_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        let timer = Delay::new(config.handshake_timeout);
        match futures::future::select(std::pin::pin!(opened), timer).await {
            futures::future::Either::Left((r, _)) => r?,
            futures::future::Either::Right(_) => return Err(WsError::Timeout),
        }
        Ok(WsLink {
            tx: WsTx {
                shared: shared.clone(),
                closed: false,
            },
            rx: WsRx { shared },
        })
    }

    /// The link's counters.
    pub fn stats(&self) -> WsStatsHandle {
        WsStatsHandle(self.tx.shared.counters.clone())
    }
}

// r[impl ws.message.text]
// r[impl ws.message.oversize]
// r[impl ws.browser.recv-bound]
fn on_message(
    state: &RefCell<State>,
    counters: &Counters,
    ws: &WebSocket,
    config: &WsConfig,
    ev: MessageEvent,
) {
    let mut s = state.borrow_mut();
    if s.end.is_some() {
        return;
    }
    let data = ev.data();
    let (bytes, text) = if let Some(buf) = data.dyn_ref::<js_sys::ArrayBuffer>() {
        if buf.byte_length() as usize > config.max_payload {
            counters.rx_oversize.bump(1);
            let err = LinkError::protocol(format!(
                "incoming message of {} bytes above the maximum payload of {}",
                buf.byte_length(),
                config.max_payload
            ));
            return Shared::fail(&mut s, ws, close::APP_TOO_BIG, "message too big", err);
        }
        (js_sys::Uint8Array::new(buf).to_vec(), false)
    } else if let Some(t) = data.as_string() {
        if !config.accept_text {
            counters.rx_text_rejected.bump(1);
            let err =
                LinkError::protocol("peer sent a text message; only binary messages are accepted");
            return Shared::fail(&mut s, ws, close::APP_UNSUPPORTED, "text not accepted", err);
        }
        if t.len() > config.max_payload {
            counters.rx_oversize.bump(1);
            let err = LinkError::protocol("incoming text message above the maximum payload");
            return Shared::fail(&mut s, ws, close::APP_TOO_BIG, "message too big", err);
        }
        (t.into_bytes(), true)
    } else {
        counters.rx_protocol_errors.bump(1);
        let err = LinkError::protocol("a message of an unexpected type (binaryType changed?)");
        return Shared::fail(
            &mut s,
            ws,
            close::APP_UNSUPPORTED,
            "unexpected message",
            err,
        );
    };
    if s.queued_bytes + bytes.len() > config.max_queued {
        counters.rx_overflow.bump(1);
        let err = LinkError::protocol(format!(
            "receive queue above its limit of {} bytes: the application is not reading",
            config.max_queued
        ));
        return Shared::fail(&mut s, ws, close::APP_POLICY, "receive queue overflow", err);
    }
    s.queued_bytes += bytes.len();
    s.queue.push_back(WsMessage {
        data: Backing::boxed(bytes),
        text,
    });
    if let Some(w) = s.rx_waker.take() {
        w.wake();
    }
}

impl Link for WsLink {
    type Tx = WsTx;
    type Rx = WsRx;

    fn caps(&self) -> LinkCaps {
        self.tx.shared.caps
    }

    fn split(self) -> (WsTx, WsRx) {
        (self.tx, self.rx)
    }
}

/// The sending half of a browser [`WsLink`].
pub struct WsTx {
    shared: Rc<Shared>,
    closed: bool,
}

impl std::fmt::Debug for WsTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsTx")
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl WsTx {
    /// The link's counters.
    pub fn stats(&self) -> WsStatsHandle {
        WsStatsHandle(self.shared.counters.clone())
    }

    /// The error a send reports, if the link can no longer send.
    fn check(&self) -> Result<(), LinkError> {
        if self.closed {
            return Err(LinkError::Closed);
        }
        match &self.shared.state.borrow().end {
            None => {}
            Some(Ok(())) => return Err(LinkError::PeerGone),
            Some(Err(e)) => return Err(e.clone()),
        }
        if self.shared.ws.ready_state() != WebSocket::OPEN {
            return Err(LinkError::PeerGone);
        }
        Ok(())
    }

    fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.check()?;
        self.shared
            .ws
            .send_with_u8_array(bytes)
            .map_err(|e| LinkError::transport(BrowserError(js_text(&e))))?;
        self.shared.counters.tx_messages.bump(1);
        self.shared.counters.tx_bytes.bump(bytes.len() as u64);
        Ok(())
    }
}

impl LinkTx for WsTx {
    type Permit<'a> = WsPermit<'a>;

    fn caps(&self) -> LinkCaps {
        self.shared.caps
    }

    // r[impl ws.backpressure.browser]
    // r[impl link.reserve.backpressure]
    // r[impl link.reserve.cancel]
    fn reserve(&mut self) -> impl MaybeSendFuture<Output = Result<WsPermit<'_>, LinkError>> {
        async move {
            let mut waited = false;
            loop {
                self.check()?;
                if (self.shared.ws.buffered_amount() as usize) <= self.shared.config.high_water {
                    return Ok(WsPermit { tx: self });
                }
                if !waited {
                    waited = true;
                    self.shared.counters.reserve_waits.bump(1);
                }
                Delay::new(self.shared.config.poll_interval).await;
            }
        }
    }

    // r[impl link.flush]
    fn flush(&mut self) -> impl MaybeSendFuture<Output = Result<(), LinkError>> {
        // The browser transmits at `send`; nothing is queued here.
        let r = if self.closed { Ok(()) } else { self.check() };
        std::future::ready(r)
    }

    // r[impl link.close.send-after]
    // r[impl ws.close.eof]
    fn close(&mut self) -> impl MaybeSendFuture<Output = Result<(), LinkError>> {
        let r = if self.closed {
            Ok(())
        } else {
            self.closed = true;
            // Messages already sent go out before the close frame.
            self.shared
                .ws
                .close_with_code(close::NORMAL)
                .map_err(|e| LinkError::transport(BrowserError(js_text(&e))))
        };
        std::future::ready(r)
    }
}

// r[impl ws.drop]
// r[impl link.drop.abrupt]
impl Drop for WsTx {
    fn drop(&mut self) {
        if !self.closed && self.shared.ws.ready_state() <= WebSocket::OPEN {
            let _ = self
                .shared
                .ws
                .close_with_code_and_reason(close::APP_GONE, "sender dropped without close");
        }
    }
}

/// Permission to send one message on a browser [`WsTx`].
pub struct WsPermit<'a> {
    tx: &'a mut WsTx,
}

impl<'a> LinkTxPermit for WsPermit<'a> {
    type Slot = WsSlot<'a>;

    // r[impl link.alloc.limit]
    fn alloc(self, len: usize) -> Result<WsSlot<'a>, LinkError> {
        let max = self.tx.shared.caps.max_payload;
        if len > max {
            return Err(LinkError::TooLarge { len, max });
        }
        Ok(WsSlot {
            tx: self.tx,
            buf: vec![0; len],
        })
    }
}

/// A message being written; [`WriteSlot::commit`] sends it.
pub struct WsSlot<'a> {
    tx: &'a mut WsTx,
    buf: Vec<u8>,
}

impl WriteSlot for WsSlot<'_> {
    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    // r[impl ws.message.binary]
    // r[impl link.slot.commit]
    fn commit(self) -> Result<(), LinkError> {
        self.tx.send_bytes(&self.buf)
    }
}

/// The receiving half of a browser [`WsLink`].
pub struct WsRx {
    shared: Rc<Shared>,
}

impl std::fmt::Debug for WsRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsRx").finish_non_exhaustive()
    }
}

impl WsRx {
    /// The link's counters.
    pub fn stats(&self) -> WsStatsHandle {
        WsStatsHandle(self.shared.counters.clone())
    }

    // r[impl link.recv.cancel]
    // r[impl link.close.sticky]
    // r[impl link.error.sticky]
    /// Receive the next message with its kind; `Ok(None)` after a normal
    /// close.
    pub fn recv_message(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<WsMessage>, LinkError>> + '_ {
        poll_fn(|cx| {
            let mut s = self.shared.state.borrow_mut();
            if let Some(m) = s.queue.pop_front() {
                s.queued_bytes -= m.data.len();
                self.shared.counters.rx_messages.bump(1);
                self.shared.counters.rx_bytes.bump(m.data.len() as u64);
                return Poll::Ready(Ok(Some(m)));
            }
            match &s.end {
                Some(end) => Poll::Ready(end.clone().map(|()| None)),
                None => {
                    s.rx_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
    }
}

impl LinkRx for WsRx {
    fn caps(&self) -> LinkCaps {
        self.shared.caps
    }

    fn recv(&mut self) -> impl MaybeSendFuture<Output = Result<Option<Backing>, LinkError>> {
        let f = self.recv_message();
        async move { f.await.map(|m| m.map(|m| m.data)) }
    }
}

// r[impl ws.drop]
// r[impl link.rx.drop]
impl Drop for WsRx {
    fn drop(&mut self) {
        let ended = self.shared.state.borrow().end.is_some();
        if !ended && self.shared.ws.ready_state() <= WebSocket::OPEN {
            let _ = self
                .shared
                .ws
                .close_with_code_and_reason(close::APP_GONE, "receiver dropped");
        }
    }
}
