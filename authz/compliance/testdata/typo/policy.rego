package fixture.typo

# METADATA
# title: Tellers read accounts
# custom:
#   pci-dss: ["7.2.1"]
#   soc2: ["CC6.1"]
allow if input.user.role == "teller"
