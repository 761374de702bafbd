//! Interfaces as rtnetlink tells: which XDP program one runs, and when interfaces or
//! their addresses appear, change or go (the link and address multicast groups).

use std::io;

use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage, LinkXdp},
};
use netlink_sys::{AsyncSocket as _, AsyncSocketExt as _, Socket, SocketAddr, TokioSocket};

/// The ids of the XDP programs attached to interface `index` of this network namespace
/// (one per mode: driver, generic, offloaded; usually one or none).
pub fn xdp_programs(index: u32) -> io::Result<Vec<u32>> {
    let mut socket = Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut message = LinkMessage::default();
    message.header.index = index;
    let mut packet = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(message)),
    );
    packet.header.flags = NLM_F_REQUEST;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let (reply, _) = socket.recv_from_full()?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
        .map_err(|e| io::Error::other(format!("parsing rtnetlink's answer: {e}")))?;
    match reply.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
            let mut ids: Vec<u32> = link
                .attributes
                .iter()
                .filter_map(|a| match a {
                    LinkAttribute::Xdp(xdp) => Some(xdp),
                    _ => None,
                })
                .flatten()
                .filter_map(|x| match x {
                    LinkXdp::ProgId(id)
                    | LinkXdp::DrvProgId(id)
                    | LinkXdp::SkbProgId(id)
                    | LinkXdp::HwProgId(id) => Some(*id),
                    _ => None,
                })
                .filter(|&id| id != 0)
                .collect();
            ids.sort_unstable();
            ids.dedup();
            Ok(ids)
        }
        NetlinkPayload::Error(e) => Err(e.to_io()),
        _ => Ok(Vec::new()),
    }
}

/// Link and address events of this network namespace: interfaces created, deleted,
/// renamed or moved; addresses added or removed.
pub struct LinkEvents {
    socket: TokioSocket,
}

impl LinkEvents {
    /// Subscribes; events from then on are delivered (call from within the runtime).
    pub fn open() -> io::Result<LinkEvents> {
        let mut socket = TokioSocket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
        socket.socket_mut().bind(&SocketAddr::new(
            0,
            (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32,
        ))?;
        Ok(LinkEvents { socket })
    }

    /// Waits until something changed. Callers look again at the interfaces they care
    /// about by name, so what each message says does not matter, and a burst the socket
    /// dropped (ENOBUFS) is a change like any other.
    pub async fn changed(&mut self) -> io::Result<()> {
        match self.socket.recv_from_full().await {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
