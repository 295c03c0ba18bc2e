# METADATA
# title: Helpers shared by the fixture policies
# custom:
#   internal: true
package fixture.lib

same_branch(user, account) if user.branch == account.branch
