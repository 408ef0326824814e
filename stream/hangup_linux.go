package stream

import (
	"sync"
	"syscall"
)

// A detached stream has no goroutine reading its connection, so nothing
// would notice a client that leaves while the topic is quiet. One epoll set
// per process watches every detached connection for the peer's hang-up
// (EPOLLRDHUP: not the data a client may send), and one goroutine, alive
// while any stream is watched, calls the stream's hang-up function.
var hangups struct {
	sync.Mutex
	p *hangupPoller
}

type hangupPoller struct {
	epfd int
	wake [2]int // a pipe whose read end in the set ends the poller

	mu  sync.Mutex
	fns map[int32]func()
}

// watchHangup calls onHangup when the peer of raw's socket closes its side
// or the socket fails. unwatch must be called before the connection is
// closed. ok is false when the socket cannot be watched.
func watchHangup(raw syscall.RawConn, onHangup func()) (unwatch func(), ok bool) {
	hangups.Lock()
	defer hangups.Unlock()
	p := hangups.p
	if p == nil {
		var err error
		if p, err = newHangupPoller(); err != nil {
			return nil, false
		}
		hangups.p = p
	}
	var fd int32 = -1
	var addErr error
	err := raw.Control(func(s uintptr) {
		ev := syscall.EpollEvent{Events: hangupEvents, Fd: int32(s)}
		p.mu.Lock()
		defer p.mu.Unlock()
		if addErr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(s), &ev); addErr == nil {
			fd = int32(s)
			p.fns[fd] = onHangup
		}
	})
	if err != nil || addErr != nil {
		p.stopIfIdle()
		return nil, false
	}
	return func() {
		hangups.Lock()
		defer hangups.Unlock()
		p.mu.Lock()
		if p.fns[fd] != nil {
			delete(p.fns, fd)
			// The socket is still open (the caller closes it after), so
			// the descriptor is still this connection's.
			_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
		}
		p.mu.Unlock()
		p.stopIfIdle()
	}, true
}

func newHangupPoller() (*hangupPoller, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	p := &hangupPoller{epfd: epfd, fns: make(map[int32]func())}
	if err := syscall.Pipe2(p.wake[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		return nil, err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(p.wake[0])}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.wake[0], &ev); err != nil {
		p.close()
		return nil, err
	}
	go p.poll()
	return p, nil
}

// stopIfIdle ends the poller when it watches nothing; hangups is locked.
func (p *hangupPoller) stopIfIdle() {
	p.mu.Lock()
	idle := len(p.fns) == 0
	p.mu.Unlock()
	if idle && hangups.p == p {
		hangups.p = nil
		_, _ = syscall.Write(p.wake[1], []byte{0})
	}
}

func (p *hangupPoller) poll() {
	defer p.close()
	events := make([]syscall.EpollEvent, 128)
	var fire []func()
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return
		}
		p.mu.Lock()
		for _, ev := range events[:n] {
			if ev.Fd == int32(p.wake[0]) {
				p.mu.Unlock()
				return
			}
			if fn := p.fns[ev.Fd]; fn != nil {
				fire = append(fire, fn)
			}
		}
		p.mu.Unlock()
		for i, fn := range fire {
			fn()
			fire[i] = nil
		}
		fire = fire[:0]
	}
}

func (p *hangupPoller) close() {
	syscall.Close(p.wake[0])
	syscall.Close(p.wake[1])
	syscall.Close(p.epfd)
}

// hangupEvents: the peer's hang-up or an error, edge-triggered, never the
// data a client may send.
const hangupEvents = uint32(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) | 1<<31 // EPOLLET
