package caddysse

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/ssegate/caddy-sse/replay"
)

func init() {
	caddy.RegisterModule(FileStore{})
}

// FileStore keeps topic logs in a file on this node (a bbolt database), so
// that history survives restarts: after `caddy stop` or a crash and a
// start, a client resuming with an id from before gets exactly the events
// it missed. A publish is answered 2xx only once its events are on disk;
// concurrent publishes share one disk sync. Ids, idempotency keys
// (webhook delivery ids) and ended topics are kept in the file too.
//
// The history bounds prune the file: it grows to about what the bounds
// retain and then reuses its free space (it never shrinks).
//
// Only one Caddy process can use a file at a time. A file that is locked
// by another process, unreadable or corrupt makes the config fail to load
// with a message naming the file; it is never replaced by an empty store.
//
// Caddyfile:
//
//	store file <path>
type FileStore struct {
	// Path of the store file, created if missing (its directory must
	// exist). Relative paths are resolved against Caddy's working
	// directory. Handlers naming the same file share its topics; the
	// history bounds of the handler provisioned last apply to all of them.
	Path string `json:"path,omitempty"`

	store  *replay.File
	key    string
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (FileStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.sse.stores.file",
		New: func() caddy.Module { return new(FileStore) },
	}
}

// Provision opens the file, or takes a reference to it when a previous
// config (a reload) has it open already.
func (s *FileStore) Provision(ctx caddy.Context) error {
	if s.Path == "" {
		return errors.New("file store: path is required")
	}
	abs, err := filepath.Abs(s.Path)
	if err != nil {
		return fmt.Errorf("file store %s: %w", s.Path, err)
	}
	key := "file:" + abs
	store, loaded, err := acquireStore(key, func() (*replay.File, error) {
		// The handler configures the real bounds right after; the file
		// is not pruned before that.
		return replay.OpenFile(abs, replay.Config{}, nil)
	})
	if err != nil {
		return err
	}
	s.key = key
	s.store = store
	s.logger = ctx.Logger()
	if !loaded {
		s.logger.Info("opened sse file store", zap.String("path", abs), zap.String("epoch", s.store.Epoch()))
	}
	return nil
}

// Validate checks the configuration.
func (s *FileStore) Validate() error {
	if s.Path == "" {
		return errors.New("file store: path is required")
	}
	return nil
}

// Cleanup drops the reference; the last one commits what is pending and
// closes the file.
func (s *FileStore) Cleanup() error {
	closed, err := releaseStore(s.key)
	s.key = ""
	if err != nil {
		return fmt.Errorf("closing sse file store %s: %w", s.store.Path(), err)
	}
	if closed {
		s.logClosed()
	}
	return nil
}

func (s *FileStore) logClosed() {
	s.logger.Info("closed sse file store", zap.String("path", s.store.Path()))
}

// Store implements StoreProvider.
func (s *FileStore) Store() replay.Store { return s.store }

// UnmarshalCaddyfile sets up the file store. Syntax:
//
//	store file <path>
func (s *FileStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the store name
	if !d.NextArg() {
		return d.Errf("store file: missing the path of the file")
	}
	s.Path = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(d.Nesting()) {
		return d.Errf("store file: unexpected block")
	}
	return nil
}

// poolKey is the key the store is shared under (see Handler.holdStore).
func (s *FileStore) poolKey() string { return s.key }

// Interface guards
var (
	_ caddy.Provisioner     = (*FileStore)(nil)
	_ caddy.Validator       = (*FileStore)(nil)
	_ caddy.CleanerUpper    = (*FileStore)(nil)
	_ caddyfile.Unmarshaler = (*FileStore)(nil)
	_ StoreProvider         = (*FileStore)(nil)
)
