// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// Deployed by tools/forge-check.sh with `forge create` and `forge script`.
contract Counter {
    uint256 public number;
    address public immutable deployer;

    event NumberSet(uint256 number);

    constructor() {
        deployer = msg.sender;
    }

    function setNumber(uint256 value) external {
        number = value;
        emit NumberSet(value);
    }
}
