//go:build linux

package redirect

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// ProtocolVersion is the version of the node agent ↔ ztunnel protocol this
// package speaks (docs/node-agent-protocol.md).
const ProtocolVersion = 1

// MaxMessageSize bounds one message (one SOCK_SEQPACKET datagram).
const MaxMessageSize = 64 << 10

// DefaultSocketPath is where the node agent listens by default.
const DefaultSocketPath = "/var/run/ambit/ztunnel.sock"

// MessageType names a protocol message.
type MessageType string

const (
	MsgHello        MessageType = "hello"         // both ways, once, first
	MsgAddPod       MessageType = "add_pod"       // agent → ztunnel, with the netns fd
	MsgDelPod       MessageType = "del_pod"       // agent → ztunnel
	MsgSnapshotSent MessageType = "snapshot_sent" // agent → ztunnel
	MsgAck          MessageType = "ack"           // ztunnel → agent, one per request
)

// Pod is what the agent tells the ztunnel about an enrolled pod.
type Pod struct {
	UID            string       `json:"uid"`
	Name           string       `json:"name,omitempty"`
	Namespace      string       `json:"namespace,omitempty"`
	ServiceAccount string       `json:"service_account,omitempty"`
	IPs            []netip.Addr `json:"ips,omitempty"`
}

func (p *Pod) validate() error {
	if p.UID == "" {
		return errors.New("pod has no uid")
	}
	if len(p.UID) > 256 {
		return errors.New("pod uid longer than 256 bytes")
	}
	for _, ip := range p.IPs {
		if !ip.IsValid() {
			return errors.New("pod has an invalid IP")
		}
	}
	return nil
}

func (p Pod) String() string {
	if p.Namespace != "" || p.Name != "" {
		return fmt.Sprintf("%s/%s (%s)", p.Namespace, p.Name, p.UID)
	}
	return p.UID
}

// Message is one protocol message, a JSON object. Which fields are used
// depends on Type; unknown fields are ignored (forward compatibility).
type Message struct {
	Type MessageType `json:"type"`
	// Seq numbers the agent's requests (add_pod, del_pod, snapshot_sent)
	// from 1 on each connection; an ack carries the seq it answers.
	Seq uint64 `json:"seq,omitempty"`
	// Version is the protocol version (hello).
	Version int `json:"version,omitempty"`
	// Pod is the pod being added (add_pod).
	Pod *Pod `json:"pod,omitempty"`
	// UID is the pod being deleted (del_pod).
	UID string `json:"uid,omitempty"`
	// Error is empty for success (ack), or why the request failed; in the
	// agent's hello, why the agent refuses the connection.
	Error string `json:"error,omitempty"`
}

// ErrMalformed wraps every decoding failure: bad JSON, an unknown
// structure, a message too large or a truncated one. A connection that
// delivers one is closed: after it, the two sides may disagree on
// sequencing.
var ErrMalformed = errors.New("redirect: malformed protocol message")

// DecodeMessage parses one message and checks the fields every message of
// its type needs. Message types this version does not know decode without
// error (the receiver decides what to do with them); semantic problems of a
// known request (a pod without uid) are reported by Validate.
func DecodeMessage(b []byte) (Message, error) {
	var m Message
	if len(b) == 0 {
		return m, fmt.Errorf("%w: empty message", ErrMalformed)
	}
	if len(b) > MaxMessageSize {
		return m, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(b), MaxMessageSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return Message{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Message{}, fmt.Errorf("%w: trailing data after the JSON object", ErrMalformed)
	}
	if m.Type == "" {
		return Message{}, fmt.Errorf("%w: no type", ErrMalformed)
	}
	switch m.Type {
	case MsgHello:
		if m.Version <= 0 {
			return Message{}, fmt.Errorf("%w: hello without a version", ErrMalformed)
		}
	case MsgAck, MsgAddPod, MsgDelPod, MsgSnapshotSent:
		if m.Seq == 0 {
			return Message{}, fmt.Errorf("%w: %s without seq", ErrMalformed, m.Type)
		}
	}
	return m, nil
}

// Validate checks a decoded request of a known type for what it must
// carry; a request failing it is answered with an error ack.
func (m *Message) Validate() error {
	switch m.Type {
	case MsgAddPod:
		if m.Pod == nil {
			return errors.New("add_pod without pod")
		}
		return m.Pod.validate()
	case MsgDelPod:
		if m.UID == "" {
			return errors.New("del_pod without uid")
		}
	case MsgHello, MsgAck, MsgSnapshotSent:
	default:
		return fmt.Errorf("unknown message type %q", m.Type)
	}
	return nil
}

// EncodeMessage renders m as it goes on the wire.
func EncodeMessage(m Message) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxMessageSize {
		return nil, fmt.Errorf("redirect: %s message of %d bytes exceeds %d", m.Type, len(b), MaxMessageSize)
	}
	return b, nil
}

// writeMsg sends m as one datagram, with fd (if not nil) as SCM_RIGHTS.
func writeMsg(c *net.UnixConn, m Message, fd *os.File) error {
	b, err := EncodeMessage(m)
	if err != nil {
		return err
	}
	var oob []byte
	if fd != nil {
		oob = unix.UnixRights(int(fd.Fd()))
	}
	n, oobn, err := c.WriteMsgUnix(b, oob, nil)
	runtime.KeepAlive(fd)
	if err != nil {
		return err
	}
	if n != len(b) || oobn != len(oob) {
		return fmt.Errorf("redirect: short write (%d/%d bytes, %d/%d control)", n, len(b), oobn, len(oob))
	}
	return nil
}

// maxFDs is how many descriptors one message may carry (add_pod carries
// one); the control buffer has room for a few more so that a misbehaving
// peer's extra descriptors are received and closed, not truncated.
const maxFDs = 4

// readMsg receives one datagram. Received descriptors are returned as
// files, which the caller must close (or hand on). On error, any received
// descriptors are already closed.
func readMsg(c *net.UnixConn) (Message, []*os.File, error) {
	buf := make([]byte, MaxMessageSize+1)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	files, ferr := parseRights(oob[:oobn])
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	if err != nil {
		closeAll()
		return Message{}, nil, err
	}
	if n == 0 && oobn == 0 {
		return Message{}, nil, io.EOF // SOCK_SEQPACKET: orderly shutdown
	}
	switch {
	case ferr != nil:
		err = fmt.Errorf("%w: control data: %v", ErrMalformed, ferr)
	case flags&unix.MSG_CTRUNC != 0:
		err = fmt.Errorf("%w: control data truncated (more than %d descriptors?)", ErrMalformed, maxFDs)
	case flags&unix.MSG_TRUNC != 0 || n > MaxMessageSize:
		err = fmt.Errorf("%w: more than %d bytes", ErrMalformed, MaxMessageSize)
	}
	if err != nil {
		closeAll()
		return Message{}, nil, err
	}
	m, err := DecodeMessage(buf[:n])
	if err != nil {
		closeAll()
		return Message{}, nil, err
	}
	return m, files, nil
}

// parseRights extracts SCM_RIGHTS descriptors, as files (also on error,
// so that none leaks).
func parseRights(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	var errs []error
	for i := range msgs {
		if msgs[i].Header.Level != unix.SOL_SOCKET || msgs[i].Header.Type != unix.SCM_RIGHTS {
			errs = append(errs, fmt.Errorf("unexpected control message %d/%d", msgs[i].Header.Level, msgs[i].Header.Type))
			continue
		}
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), "netns"))
		}
	}
	return files, errors.Join(errs...)
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}
