package fixture.authz_test

import data.fixture.authz

test_teller_reads_account_of_own_branch if {
	authz.allow with input as {"method": "GET", "user": {"role": "teller", "branch": "b1"}, "account": {"branch": "b1"}}
}

test_teller_cannot_read_account_of_other_branch if {
	not authz.allow with input as {"method": "GET", "user": {"role": "teller", "branch": "b1"}, "account": {"branch": "b2"}}
}

test_auditor_reads_any_account if {
	authz.allow with input as {"method": "GET", "user": {"role": "auditor"}, "account": {"branch": "b2"}}
}

test_write_outside_hours_is_denied if {
	"write_outside_hours" in authz.deny with input as {"method": "POST", "hour": 6}
}

todo_test_customer_exports_own_data if {
	authz.export_allowed with input as {"user": {"role": "customer", "id": "c1"}, "account": {"owner": "c1"}}
}
