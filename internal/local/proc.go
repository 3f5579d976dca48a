//go:build linux

package local

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/ambit-mesh/ambit/internal/netns"
)

// Backoff of restarts, as a kubelet's CrashLoopBackOff (shorter first step).
const (
	restartBackoffMin = 250 * time.Millisecond
	restartBackoffMax = 10 * time.Second
	// A process that ran this long resets the backoff.
	restartResetAfter = 10 * time.Second
	stopGrace         = 2 * time.Second
)

// proc is a supervised process inside a network namespace: restarted with
// exponential backoff when it exits, stopped with SIGTERM then SIGKILL.
type proc struct {
	name    string
	ns      *netns.NS
	build   func() *exec.Cmd
	logPath string
	// changed is called (without locks held) whenever pid or restarts change.
	changed func()

	mu       sync.Mutex
	pid      int
	restarts int
	stopping bool
	stop     chan struct{}
	done     chan struct{}
}

func newProc(name string, ns *netns.NS, logPath string, build func() *exec.Cmd, changed func()) *proc {
	return &proc{name: name, ns: ns, build: build, logPath: logPath, changed: changed,
		stop: make(chan struct{}), done: make(chan struct{})}
}

// start launches the process once (reporting a failure to start) and
// supervises it in the background.
func (p *proc) start() error {
	cmd, err := p.launch()
	if err != nil {
		close(p.done)
		return err
	}
	go p.supervise(cmd)
	return nil
}

func (p *proc) launch() (*exec.Cmd, error) {
	log, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := p.build()
	cmd.Stdout, cmd.Stderr = log, log
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := netns.StartCmd(p.ns, cmd); err != nil {
		return nil, fmt.Errorf("%s: %w", p.name, err)
	}
	p.mu.Lock()
	p.pid = cmd.Process.Pid
	p.mu.Unlock()
	p.changed()
	return cmd, nil
}

func (p *proc) supervise(cmd *exec.Cmd) {
	defer close(p.done)
	backoff := restartBackoffMin
	for {
		started := time.Now()
		waited := make(chan error, 1)
		go func() { waited <- cmd.Wait() }()
		var err error
		select {
		case err = <-waited:
		case <-p.stop:
			p.kill(cmd, waited)
			return
		}
		if time.Since(started) > restartResetAfter {
			backoff = restartBackoffMin
		}
		p.appendLog(fmt.Sprintf("ambit: %s exited (%v); restarting in %s\n", p.name, exitText(err), backoff))
		select {
		case <-time.After(backoff):
		case <-p.stop:
			return
		}
		backoff = min(backoff*2, restartBackoffMax)
		for {
			cmd, err = p.launch()
			if err == nil {
				break
			}
			p.appendLog(fmt.Sprintf("ambit: %v; retrying in %s\n", err, backoff))
			select {
			case <-time.After(backoff):
			case <-p.stop:
				return
			}
			backoff = min(backoff*2, restartBackoffMax)
		}
		p.mu.Lock()
		p.restarts++
		p.mu.Unlock()
		p.changed()
	}
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func (p *proc) appendLog(s string) {
	if f, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644); err == nil {
		f.WriteString(s)
		f.Close()
	}
}

// kill stops the process group: SIGTERM, SIGKILL after stopGrace.
func (p *proc) kill(cmd *exec.Cmd, waited chan error) {
	pid := cmd.Process.Pid
	syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-waited:
	case <-time.After(stopGrace):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-waited
	}
	// Leftover children of the group.
	syscall.Kill(-pid, syscall.SIGKILL)
}

// Stop stops supervision and the process; it returns once it is gone.
func (p *proc) Stop() {
	p.mu.Lock()
	if !p.stopping {
		p.stopping = true
		close(p.stop)
	}
	p.mu.Unlock()
	<-p.done
}

func (p *proc) status() (pid, restarts int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid, p.restarts
}
