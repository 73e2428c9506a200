//! The linker's rules, one scenario each, with ids that tell a right parent from a wrong one.

use super::*;

fn facts<'a>(tid: u32, path: &'a str, tp: Option<&'a str>, ts: u64) -> RequestFacts<'a> {
    RequestFacts { tid, conn_id: 1, path, traceparent: tp, start_enter_ns: ts, start_exit_ns: ts + 1, key: None }
}

#[test]
fn client_inside_server_is_child() {
    let mut l = Linker::default();
    let now = Instant::now();
    let s = l.start_server(&facts(7, "/", None, 1), None);
    let c = l.start_client(&facts(7, "/x", None, 2), None, &Evidence::Thread);
    let sc = l.resolve(s, now).expect("server known");
    let cc = l.resolve(c, now).expect("client known");
    assert_eq!(cc.trace_id, sc.trace_id);
    assert_eq!(cc.parent, Some(s));
    assert_eq!(sc.parent, None);
}

#[test]
fn childless_server_spans_leave_the_table_and_parents_stay() {
    let mut l = Linker::default();
    let now = Instant::now();
    let lone = l.start_server(&facts(1, "/a", None, 1), None);
    l.end_server(1, 1, lone);
    l.finish(lone);
    assert!(l.resolve(lone, now).is_some());
    assert!(!l.nodes.contains_key(&lone), "nothing can refer to it any more");
    // A SERVER span with a child resolves first (it ends after its child starts) and must
    // still be there when the child resolves.
    let parent = l.start_server(&facts(2, "/b", None, 2), None);
    let child = l.start_client(&facts(2, "/c", None, 3), None, &Evidence::Thread);
    l.end_server(2, 1, parent);
    l.finish(parent);
    let pc = l.resolve(parent, now).expect("parent");
    l.finish(child);
    let cc = l.resolve(child, now).expect("child");
    assert_eq!((cc.trace_id, cc.parent), (pc.trace_id, Some(parent)));
}

#[test]
fn incoming_traceparent_joins() {
    let mut l = Linker::default();
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let s = l.start_server(&facts(1, "/", Some(tp), 1), None);
    let ctx = l.resolve(s, Instant::now()).expect("known");
    assert_eq!(traceparent::hex(&ctx.trace_id), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(ctx.parent.map(|p| traceparent::hex(&p)).as_deref(), Some("b7ad6b7169203331"));
}

#[test]
fn outgoing_traceparent_is_adopted_unless_passed_through() {
    let mut l = Linker::default();
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let s = l.start_server(&facts(1, "/p", Some(incoming), 1), None);
    // A proxy forwarding the same header: ordinary child of our SERVER span.
    let c1 = l.start_client(&facts(1, "/p", Some(incoming), 2), None, &Evidence::Thread);
    assert_eq!(l.resolve(c1, Instant::now()).map(|c| c.parent), Some(Some(s)));
    // An instrumented app's own header: adopt its span id.
    let own = "00-0af7651916cd43dd8448eb211c80319c-1111111111111111-01";
    let c2 = l.start_client(&facts(1, "/p", Some(own), 3), None, &Evidence::Thread);
    assert_eq!(traceparent::hex(&c2), "1111111111111111");
}

#[test]
fn server_without_context_joins_the_apps_trace() {
    let mut l = Linker::default();
    let s = l.start_server(&facts(1, "/m", None, 1), None);
    let own = "00-0af7651916cd43dd8448eb211c80319c-1111111111111111-01";
    let c = l.start_client(&facts(1, "/item", Some(own), 2), None, &Evidence::Thread);
    let db = l.start_client(&facts(1, "", None, 3), None, &Evidence::Thread);
    let now = Instant::now();
    let (sc, cc, dc) = (l.resolve(s, now).expect("server"), l.resolve(c, now).expect("client"), l.resolve(db, now).expect("db"));
    assert_eq!(traceparent::hex(&sc.trace_id), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!((cc.trace_id, cc.parent), (sc.trace_id, Some(s)));
    assert_eq!((dc.trace_id, dc.parent), (sc.trace_id, Some(s)));
    // Once a child resolved against the SERVER span's own trace, it keeps it.
    let s2 = l.start_server(&facts(2, "/m", None, 10), None);
    let early = l.start_client(&facts(2, "", None, 11), None, &Evidence::Thread);
    let first = l.resolve(early, now).expect("early child").trace_id;
    let late = l.start_client(&facts(2, "/item", Some(own), 12), None, &Evidence::Thread);
    assert_eq!(l.resolve(s2, now).map(|c| c.trace_id), Some(first));
    assert_eq!(l.resolve(late, now).map(|c| c.parent), Some(None), "the adopted span keeps the app's trace, outside ours");
}

fn callee_end(client: SocketAddr, server_port: u16) -> Option<CalleeEnd> {
    Some(CalleeEnd { client: PeerKey::new(client), server_port: Some(server_port) })
}

#[test]
fn stitches_local_peer() {
    let mut l = Linker::default();
    let client_local: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let server: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    l.client_connected(client_local, Some(server), 2);
    // The callee's request is seen before the caller's write record.
    let back = l.start_server(&facts(2, "/b", None, 10), callee_end(client_local, 8080));
    assert!(l.resolve(back, Instant::now()).is_none());
    let front = l.start_server(&facts(1, "/f", None, 1), None);
    let call = l.start_client(&facts(1, "/b", None, 5), Some((client_local, Some(server))), &Evidence::Thread);
    let ctx = l.resolve(back, Instant::now()).expect("stitched");
    assert_eq!(ctx.parent, Some(call));
    assert_eq!(Some(ctx.trace_id), l.resolve(front, Instant::now()).map(|c| c.trace_id));
    assert_eq!(l.stitch.stitched, 1);
}

#[test]
fn unmatched_peer_times_out_to_header_or_root() {
    let mut l = Linker::default();
    let client_local: SocketAddr = "127.0.0.1:40001".parse().expect("addr");
    l.client_connected(client_local, "127.0.0.1:8080".parse().ok(), 2);
    let s = l.start_server(&facts(2, "/", None, 10), callee_end(client_local, 8080));
    l.finish(s);
    assert!(l.resolve(s, Instant::now()).is_none());
    let later = Instant::now() + PEER_WAIT;
    assert_eq!(l.resolve(s, later).map(|c| c.parent), Some(None));
    assert_eq!(l.stitch.caller_not_seen, 1);
}

/// An untraced client reuses the port a traced caller used before: its request was read
/// after the traced connection closed, so it is a root at once, never the old caller's child.
#[test]
fn reused_client_port_is_not_the_old_callers() {
    let mut l = Linker::default();
    let client_local: SocketAddr = "127.0.0.1:40002".parse().expect("addr");
    let server: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    l.client_connected(client_local, Some(server), 2);
    let front = l.start_server(&facts(1, "/f", None, 1), None);
    let call = l.start_client(&facts(1, "/b", None, 5), Some((client_local, Some(server))), &Evidence::Thread);
    let back = l.start_server(&facts(2, "/b", None, 6), callee_end(client_local, 8080));
    l.client_closed(client_local, Some(server), 20);
    let reused = l.start_server(&facts(2, "/other", None, 30), callee_end(client_local, 8080));
    assert_eq!(l.resolve(back, Instant::now()).map(|c| c.parent), Some(Some(call)));
    assert_eq!(l.resolve(reused, Instant::now()).map(|c| c.parent), Some(None), "no waiting, no parent");
    // Same port, another destination port, while the traced connection was open: not it.
    let elsewhere = l.start_server(&facts(3, "/x", None, 7), callee_end(client_local, 9090));
    assert_eq!(l.resolve(elsewhere, Instant::now()).map(|c| c.parent), Some(None));
    let _ = front;
}

/// A caller whose own parent never gets decided cannot hold its callee forever.
#[test]
fn callee_is_not_held_hostage_by_an_unplaced_caller() {
    let mut l = Linker::default();
    let client_local: SocketAddr = "127.0.0.1:40003".parse().expect("addr");
    let server: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    l.client_connected(client_local, Some(server), 2);
    let call = l.start_client(&facts(1, "", None, 5), Some((client_local, Some(server))), &Evidence::Unit((1, 77)));
    let back = l.start_server(&facts(2, "/b", None, 6), callee_end(client_local, 8080));
    l.finish(back);
    assert!(l.resolve(back, Instant::now()).is_none(), "waits while the caller may still be placed");
    let ctx = l.resolve(back, Instant::now() + PEER_GIVE_UP).expect("a root after the give-up time");
    assert_eq!(ctx.parent, None);
    assert_eq!(l.stitch.caller_unplaced, 1);
    let _ = call;
}

/// A caller found while it waits for its own parent stays the callee's caller even after the
/// caller table moved on (it keeps a connection's latest calls only): the callee is stitched
/// once the caller is placed, not given up as "caller not seen".
#[test]
fn a_callee_keeps_its_caller_while_the_caller_waits() {
    let mut l = Linker::default();
    let client_local: SocketAddr = "127.0.0.1:40004".parse().expect("addr");
    let server: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    l.client_connected(client_local, Some(server), 2);
    let front = l.start_server(&facts(1, "/f", None, 1), None);
    let task = (1, 77);
    let call = l.start_client(&facts(1, "", None, 5), Some((client_local, Some(server))), &Evidence::Unit(task));
    let back = l.start_server(&facts(2, "/b", None, 6), callee_end(client_local, 8080));
    l.finish(back);
    assert!(l.resolve(back, Instant::now()).is_none(), "waits for its caller's context");
    for i in 0..200 {
        let later = l.start_client(&facts(3, "", None, 100 + i), Some((client_local, Some(server))), &Evidence::Thread);
        l.client_answered(Some(client_local), later, 101 + i);
    }
    l.unit_answered(task, front, 3);
    let ctx = l.resolve(back, Instant::now() + PEER_WAIT).expect("stitched");
    assert_eq!(ctx.parent, Some(call));
    assert_eq!(Some(ctx.trace_id), l.resolve(front, Instant::now()).map(|c| c.trace_id));
    assert_eq!((l.stitch.stitched, l.stitch.caller_not_seen), (1, 0));
}

const NOW_NS: u64 = 1_000;

/// An event loop serving two requests on one thread, without runtime probes: the thread
/// rule cannot choose, so the call gets no parent and links to both (counted).
#[test]
fn a_thread_serving_several_requests_names_none() {
    let mut l = Linker::default();
    let a = l.start_server(&facts(1, "/a", None, 1), None);
    let b = l.start_server(&facts(1, "/b", None, 2), None);
    let c = l.start_client(&facts(1, "/x", None, 3), None, &Evidence::Thread);
    let ctx = l.resolve(c, Instant::now()).expect("decided now");
    assert_eq!(ctx.parent, None);
    let linked: Vec<SpanId> = l.links(&c).into_iter().map(|(_, s)| s).collect();
    assert_eq!(linked, vec![a, b]);
    assert_eq!(l.stats.get(Why::ThreadServesSeveral), 1);
    // A proxy forwarding the path of exactly one of them: that one.
    let p = l.start_client(&facts(1, "/b", None, 4), None, &Evidence::Thread);
    assert_eq!(l.resolve(p, Instant::now()).map(|c| c.parent), Some(Some(b)));
}

/// A call continuing the answers of calls made for two different requests is ambiguous;
/// one continuing a single request's answer is that request's.
#[test]
fn continuations_follow_the_answered_calls() {
    let mut l = Linker::default();
    let a = l.start_server(&facts(1, "/a", None, 1), None);
    let b = l.start_server(&facts(1, "/b", None, 2), None);
    let qa = l.start_client(&facts(1, "", None, 3), None, &Evidence::Serving(a, Why::Callback));
    let qb = l.start_client(&facts(1, "", None, 4), None, &Evidence::Serving(b, Why::Callback));
    let next = l.start_client(&facts(1, "", None, 5), None, &Evidence::Continues { clients: vec![qa], same_connection: false });
    assert_eq!(l.resolve(next, Instant::now()).map(|c| c.parent), Some(Some(a)));
    let both = l.start_client(&facts(1, "", None, 6), None, &Evidence::Continues { clients: vec![qa, qb], same_connection: false });
    assert_eq!(l.resolve(both, Instant::now()).map(|c| c.parent), Some(None));
    assert_eq!(l.stats.get(Why::ContinuesSeveral), 1);
}

/// A query written on the connection whose answer the callback read (a pool may have
/// handed it to a queued request) waits for the request its callback chain answers.
#[test]
fn a_possible_hand_off_waits_for_what_its_chain_answers() {
    let mut l = Linker::default();
    let a = l.start_server(&facts(1, "/a", None, 1), None);
    let b = l.start_server(&facts(1, "/b", None, 2), None);
    let qa = l.start_client(&facts(1, "", None, 3), None, &Evidence::Serving(a, Why::Callback));
    let handed = l.start_client(&facts(1, "", None, 4), None, &Evidence::Continues { clients: vec![qa], same_connection: true });
    assert!(l.resolve(handed, Instant::now()).is_none(), "undecided until its chain answers");
    // Its answer's callback writes the next call of the chain, whose answer's callback
    // writes request b's response.
    let after = l.start_client(&facts(1, "", None, 5), None, &Evidence::Continues { clients: vec![handed], same_connection: false });
    l.chain_answered(&[after], b, 2);
    let now = Instant::now();
    assert_eq!(l.resolve(handed, now).map(|c| c.parent), Some(Some(b)));
    assert_eq!(l.resolve(after, now).map(|c| c.parent), Some(Some(b)));
    assert!(l.links(&handed).is_empty(), "decided: no candidate links");
    // A chain whose callback also read an answer made for the request it answers decides
    // nothing: that request's own code may have written the answer.
    let c = l.start_server(&facts(1, "/c", None, 6), None);
    let qc = l.start_client(&facts(1, "", None, 7), None, &Evidence::Serving(c, Why::Callback));
    let other = l.start_client(&facts(1, "", None, 8), None, &Evidence::Continues { clients: vec![qc], same_connection: true });
    l.chain_answered(&[qc, other], c, 6);
    l.finish(other);
    assert!(l.resolve(other, now).is_none());
    let later = Instant::now() + UNIT_WAIT;
    assert_eq!(l.resolve(other, later).map(|c| c.parent), Some(None), "times out to a root");
}

/// asyncio: a task's calls belong to the request it answers next, if read before them;
/// a child task's calls belong to its creator's request.
#[test]
fn tasks_answer_for_their_calls_and_their_children() {
    let mut l = Linker::default();
    let task = (10, 0xAAAA);
    let child = (10, 0xBBBB);
    let a = l.start_server(&facts(1, "/a", None, 100), None);
    let early = l.start_client(&facts(1, "", None, 50), None, &Evidence::Unit(task));
    l.unit_spawned(child, Some(task), 150);
    let by_child = l.start_client(&facts(1, "", None, 160), None, &Evidence::Unit(child));
    let own = l.start_client(&facts(1, "", None, 170), None, &Evidence::Unit(task));
    l.unit_answered(task, a, 101);
    let now = Instant::now();
    assert_eq!(l.resolve(own, now).map(|c| c.parent), Some(Some(a)));
    assert_eq!(l.resolve(by_child, now).map(|c| c.parent), Some(Some(a)));
    assert_eq!(l.resolve(early, now).map(|c| c.parent), Some(None), "written before the request was read");
    // A task created without a parent at a reused address forgets the old creator.
    l.unit_spawned(child, None, 200);
    assert_eq!(l.answering_units(child, 210), vec![(child, 210)]);
}

/// A task that never answered dies and a new task takes its address: the old task's calls
/// do not go to the request the new one answers.
#[test]
fn a_reused_task_address_starts_afresh() {
    let mut l = Linker::default();
    let key = (10, 0xCCCC);
    let background = l.start_client(&facts(1, "", None, 200), None, &Evidence::Unit(key));
    let b = l.start_server(&facts(1, "/b", None, 100), None);
    l.unit_spawned(key, None, 300);
    let own = l.start_client(&facts(1, "", None, 310), None, &Evidence::Unit(key));
    l.unit_answered(key, b, 101);
    let now = Instant::now();
    assert_eq!(l.resolve(own, now).map(|c| c.parent), Some(Some(b)));
    assert!(l.resolve(background, now).is_none(), "not decided by the new task");
    l.finish(background);
    let later = Instant::now() + UNIT_WAIT;
    assert_eq!(l.resolve(background, later).map(|c| c.parent), Some(None));
}

/// Work handed to a pool thread carries the submitting thread's verdict taken at the
/// hand-off, not whatever that thread serves later.
#[test]
fn hand_offs_take_the_verdict_at_hand_off_time() {
    let mut l = Linker::default();
    let a = l.start_server(&facts(1, "/a", None, NOW_NS), None);
    let handed = l.portable(1, Evidence::Thread);
    l.end_server(1, 1, a);
    let _b = l.start_server(&facts(1, "/b", None, NOW_NS + 1), None);
    let c = l.start_client(&facts(2, "", None, NOW_NS + 2), None, &handed);
    assert_eq!(l.resolve(c, Instant::now()).map(|c| c.parent), Some(Some(a)));
    assert_eq!(l.stats.get(Why::Delegated), 1);
}

/// A delivery held while its consumer thread works on it outlives the 3 s a finished span is
/// remembered: a slow job's late call still finds it. Released, it is forgotten.
#[test]
fn a_held_delivery_is_remembered_until_released() {
    let mut l = Linker::default();
    let delivery = l.start_consumer(&facts(1, "", None, 1), None);
    l.finish(delivery);
    l.hold(delivery);
    let later = Instant::now() + REMEMBER * 2;
    l.expire(later);
    let late_call = l.start_client(&facts(1, "/item/7", None, 9), None, &Evidence::Serving(delivery, Why::Delivery));
    assert_eq!(l.resolve(late_call, later).and_then(|c| c.parent), Some(delivery), "still known: its late call is its child");
    l.release(&delivery);
    l.expire(later + REMEMBER * 2);
    assert!(!l.nodes.contains_key(&delivery), "forgotten once released");
}

/// A delivery is decided a moment after it was read: the record of a send written before
/// the read may come in after it (the publisher descheduled between its write and its
/// record). Two sends of the same message then name no parent, even when the second's record
/// is late; one late send is still the parent.
#[test]
fn a_delivery_waits_for_late_send_records() {
    let mut l = Linker::default();
    let first = l.start_client(&facts(1, "", None, 10), None, &Evidence::Thread);
    l.message_sent(77, first, 10);
    let delivery = l.start_consumer(&facts(2, "", None, 30), Some(77));
    l.finish(delivery);
    let second = l.start_client(&facts(3, "", None, 20), None, &Evidence::Thread);
    l.message_sent(77, second, 20);
    let now = Instant::now();
    assert!(l.resolve(delivery, now).is_none(), "not decided before the wait");
    let ctx = l.resolve(delivery, now + SENDS_WAIT).expect("decided");
    assert_eq!(ctx.parent, None, "two sends before the read: no parent");
    let mut linked: Vec<SpanId> = l.links(&delivery).into_iter().map(|(_, s)| s).collect();
    linked.sort_unstable();
    let mut both = vec![first, second];
    both.sort_unstable();
    assert_eq!(linked, both);

    let lone = l.start_consumer(&facts(2, "", None, 40), Some(88));
    l.finish(lone);
    let late = l.start_client(&facts(4, "", None, 35), None, &Evidence::Thread);
    l.message_sent(88, late, 35);
    assert_eq!(l.resolve(lone, Instant::now() + SENDS_WAIT).and_then(|c| c.parent), Some(late));
}
