//! A small authoritative DNS server on loopback (UDP and TCP, one port) serving a
//! zone the test changes while fulcrum runs; built on hickory-proto's messages.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

#[derive(Default)]
pub struct Zone {
    pub a: HashMap<String, Vec<Ipv4Addr>>,
    /// name → (weight, port, target)
    pub srv: HashMap<String, Vec<(u16, u16, String)>>,
    /// No answers at all: UDP queries go unanswered, TCP connections are closed.
    pub down: bool,
    pub queries: usize,
}

pub struct Dns {
    pub addr: SocketAddr,
    pub zone: Arc<Mutex<Zone>>,
}

/// A UDP socket and a TCP listener on the same ephemeral port: the port the kernel
/// picks for UDP may be taken for TCP (other tests' connections), so try again.
fn bind_pair() -> (UdpSocket, TcpListener, SocketAddr) {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = TcpListener::bind(addr) {
            return (udp, tcp, addr);
        }
    }
    panic!("no port free for both UDP and TCP after 100 tries");
}

impl Dns {
    pub fn start() -> Dns {
        let (udp, tcp, addr) = bind_pair();
        let zone = Arc::new(Mutex::new(Zone::default()));
        let z = zone.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                if let Some(out) = answer(&z, &buf[..n], true) {
                    let _ = udp.send_to(&out, from);
                }
            }
        });
        let z = zone.clone();
        std::thread::spawn(move || {
            for mut s in tcp.incoming().map_while(Result::ok) {
                let z = z.clone();
                std::thread::spawn(move || loop {
                    let mut len = [0u8; 2];
                    if s.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                    if s.read_exact(&mut q).is_err() {
                        return;
                    }
                    let Some(out) = answer(&z, &q, false) else {
                        return;
                    };
                    let mut framed = (out.len() as u16).to_be_bytes().to_vec();
                    framed.extend(out);
                    if s.write_all(&framed).is_err() {
                        return;
                    }
                });
            }
        });
        Dns { addr, zone }
    }

    pub fn set_a(&self, name: &str, ips: &[Ipv4Addr]) {
        self.zone
            .lock()
            .unwrap()
            .a
            .insert(name.into(), ips.to_vec());
    }

    pub fn set_srv(&self, name: &str, recs: &[(u16, u16, &str)]) {
        let v = recs
            .iter()
            .map(|(w, p, t)| (*w, *p, t.to_string()))
            .collect();
        self.zone.lock().unwrap().srv.insert(name.into(), v);
    }

    pub fn set_down(&self, down: bool) {
        self.zone.lock().unwrap().down = down;
    }
}

fn answer(zone: &Mutex<Zone>, q: &[u8], udp: bool) -> Option<Vec<u8>> {
    let req = Message::from_vec(q).ok()?;
    let mut z = zone.lock().unwrap();
    if z.down {
        return None;
    }
    z.queries += 1;
    let mut m = Message::new();
    m.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(req.op_code())
        .set_authoritative(true)
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(true);
    let query = req.queries().first()?.clone();
    let name = query.name().to_ascii().trim_end_matches('.').to_string();
    let owner = query.name().clone();
    let known = z.a.contains_key(&name) || z.srv.contains_key(&name);
    match query.query_type() {
        RecordType::A => {
            for ip in z.a.get(&name).into_iter().flatten() {
                m.add_answer(Record::from_rdata(owner.clone(), 1, RData::A(A(*ip))));
            }
        }
        RecordType::SRV => {
            for (w, p, t) in z.srv.get(&name).into_iter().flatten() {
                let target = Name::from_ascii(format!("{t}.")).ok()?;
                let srv = SRV::new(0, *w, *p, target);
                m.add_answer(Record::from_rdata(owner.clone(), 1, RData::SRV(srv)));
            }
        }
        _ => {}
    }
    m.add_query(query);
    m.set_response_code(if known {
        ResponseCode::NoError
    } else {
        ResponseCode::NXDomain
    });
    let out = m.to_vec().ok()?;
    if udp && out.len() > 512 {
        // Too big for plain UDP: the client asks again over TCP.
        let mut t = Message::new();
        t.set_id(req.id())
            .set_message_type(MessageType::Response)
            .set_op_code(req.op_code())
            .set_truncated(true);
        t.add_query(req.queries()[0].clone());
        return t.to_vec().ok();
    }
    Some(out)
}
