# METADATA
# title: Fixture account access policy
# description: Small enough to check by hand, with one rule of every kind the matrix knows.
package fixture.authz

import data.fixture.lib

# METADATA
# title: Deny unless a rule allows
# custom:
#   pci_dss: ["7.2.5"]
default allow := false

# METADATA
# title: Tellers read accounts of their own branch
# custom:
#   pci_dss: ["7.2.1", "8.3.1"]
#   soc2: ["CC6.1"]
allow if {
	input.method == "GET"
	is_teller
	lib.same_branch(input.user, input.account)
}

# METADATA
# title: Auditors read every account
# custom:
#   pci_dss: ["10.2.1", "7.2.1"]
#   soc2: ["CC6.1"]
allow if {
	input.method == "GET"
	input.user.role == "auditor"
}

# METADATA
# scope: document
# title: Reasons a request is denied
# custom:
#   gdpr: ["5(1)(c)"]
#   glba: ["314.4(c)(1)"]
deny contains "write_outside_hours" if {
	input.method == "POST"
	input.hour < 8
}

deny contains "delete_forbidden" if input.method == "DELETE"

# METADATA
# title: Customers export their own data
# custom:
#   ccpa: ["1798.100(c)"]
export_allowed if {
	input.user.role == "customer"
	input.account.owner == input.user.id
}

# METADATA
# custom:
#   internal: true
is_teller if input.user.role in data.fixture.roles.tellers

# METADATA
# title: Fields written to the decision log
audit_fields := {"method", "user", "account"}

obligations contains "log" if allow
