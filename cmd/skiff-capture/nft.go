package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// table is skiff-capture's table in the current network namespace.
func table() *nftables.Table {
	return &nftables.Table{Name: tableName, Family: nftables.TableFamilyIPv4}
}

// install replaces skiff-capture's table with rs in one netlink transaction: the kernel
// applies all of it or none of it, so a re-run is idempotent and a failed run changes
// nothing. It returns how many rules the kernel holds afterwards.
func install(rs ruleset) (int, error) {
	conn, err := nftables.New()
	if err != nil {
		return 0, fmt.Errorf("opening a netlink connection to nf_tables: %w", err)
	}
	t := table()
	// Add (a no-op if present), delete, add: an empty table whatever was there before.
	conn.AddTable(t)
	conn.DelTable(t)
	conn.AddTable(t)
	chains := map[string]*nftables.Chain{}
	// Every chain before any rule: a jump must name a chain that exists.
	for _, c := range rs.chains {
		nc := &nftables.Chain{Name: c.name, Table: t}
		if c.hook != nil {
			accept := nftables.ChainPolicyAccept
			nc.Type, nc.Hooknum, nc.Priority, nc.Policy = nftables.ChainTypeNAT, c.hook, nftables.ChainPriorityNATDest, &accept
		}
		chains[c.name] = conn.AddChain(nc)
	}
	want := 0
	for _, c := range rs.chains {
		for _, r := range c.rules {
			conn.AddRule(&nftables.Rule{Table: t, Chain: chains[c.name], Exprs: r.exprs})
			want++
		}
	}
	if err := conn.Flush(); err != nil {
		return 0, fmt.Errorf("installing table ip %s: %w", tableName, explain(err))
	}
	got, err := countRules(conn, t)
	if err != nil {
		return 0, err
	}
	if got != want {
		return got, fmt.Errorf("table ip %s holds %d rules after install, want %d", tableName, got, want)
	}
	return got, nil
}

// countRules lists the table's chains and counts their rules.
func countRules(conn *nftables.Conn, t *nftables.Table) (int, error) {
	chains, err := conn.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return 0, fmt.Errorf("listing the chains of table ip %s: %w", tableName, err)
	}
	n := 0
	for _, c := range chains {
		if c.Table.Name != t.Name {
			continue
		}
		rules, err := conn.GetRules(t, c)
		if err != nil {
			return 0, fmt.Errorf("listing the rules of chain %s: %w", c.Name, err)
		}
		n += len(rules)
	}
	return n, nil
}

// cleanup deletes skiff-capture's table, and with it every rule; a namespace without it is
// left as it is.
func cleanup() error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening a netlink connection to nf_tables: %w", err)
	}
	t := table()
	conn.AddTable(t) // so that the delete cannot fail with ENOENT
	conn.DelTable(t)
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("deleting table ip %s: %w", tableName, explain(err))
	}
	return nil
}

// installed reports whether skiff-capture's table exists.
func installed() (bool, error) {
	conn, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("opening a netlink connection to nf_tables: %w", err)
	}
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, fmt.Errorf("listing nf_tables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == tableName {
			return true, nil
		}
	}
	return false, nil
}

// explain adds the likely cause to the errors the kernel gives for a missing privilege or
// missing nf_tables support.
func explain(err error) error {
	switch {
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w (needs CAP_NET_ADMIN in the pod's network namespace)", err)
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%w (is the kernel built with nf_tables and NAT, CONFIG_NFT_NAT and CONFIG_NFT_REDIR?)", err)
	}
	return err
}
