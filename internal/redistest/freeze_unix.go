//go:build unix

package redistest

import "syscall"

// Freeze stops the server's process (SIGSTOP) as a stalled machine or a
// long fork would: connections stay open and nothing answers until Thaw.
func (s *Server) Freeze() { s.signal(syscall.SIGSTOP) }

// Thaw lets a frozen server run again (SIGCONT).
func (s *Server) Thaw() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.t.Helper()
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil {
		s.t.Fatalf("redis-server is not running: cannot send %v", sig)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("sending %v to redis-server: %v", sig, err)
	}
}
